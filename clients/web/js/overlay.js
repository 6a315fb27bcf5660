// The overlay on the avatar video: frames per second shown here, latency, the bit rate the server
// chose for this browser's link, and the video's codec.
//
// Latency = what the server adds (webcam frame received -> avatar frame sent, p50 from its stats
// message) + what the network and this browser add (half the round trip + jitter-buffer delay,
// from RTCPeerConnection.getStats()). Only while connected: a reconnecting page shows no figures,
// and the server's latency only while new poses come (webcam frames tracked, or a motion file).

const UPDATE_MS = 1000;

export class StatsOverlay {
  /**
   * @param {HTMLVideoElement} video the avatar video.
   * @param {HTMLElement} element where the text goes.
   * @param {() => {pc: RTCPeerConnection|null, lastStats: object|null, state: string}} source the connection.
   */
  constructor(video, element, source) {
    this.video = video;
    this.element = element;
    this.source = source;
    this.frames = 0;
    this.lastFrames = 0;
    this.lastTime = performance.now();
    this.fps = 0;
    this.clientMs = null;
    this.codec = null;
    this.timer = null;
    this.#countFrames();
  }

  #countFrames() {
    const video = this.video;
    if ("requestVideoFrameCallback" in HTMLVideoElement.prototype) {
      const onFrame = () => {
        this.frames += 1;
        video.requestVideoFrameCallback(onFrame);
      };
      video.requestVideoFrameCallback(onFrame);
    }
  }

  /** Frames shown so far (requestVideoFrameCallback, else the playback-quality counter). */
  framesShown() {
    if ("requestVideoFrameCallback" in HTMLVideoElement.prototype) return this.frames;
    const q = this.video.getVideoPlaybackQuality ? this.video.getVideoPlaybackQuality() : null;
    return q ? q.totalVideoFrames : 0;
  }

  start() {
    if (this.timer) return;
    this.timer = setInterval(() => this.update(), UPDATE_MS);
  }

  stop() {
    clearInterval(this.timer);
    this.timer = null;
    this.element.textContent = "";
  }

  /** From getStats(): what the network and this browser add (ms, or null), and the avatar video's codec. */
  async #clientFigures(pc) {
    if (!pc) return { ms: null, codec: null };
    let rtt = null;
    let buffer = null;
    let codecId = null;
    const report = await pc.getStats();
    report.forEach((s) => {
      if (s.type === "candidate-pair" && s.state === "succeeded" && s.currentRoundTripTime !== undefined) {
        rtt = s.currentRoundTripTime;
      }
      if (s.type === "inbound-rtp" && s.kind === "video") {
        codecId = s.codecId || codecId;
        if (s.jitterBufferEmittedCount) buffer = s.jitterBufferDelay / s.jitterBufferEmittedCount;
      }
    });
    const codec = codecId && report.get(codecId) ? report.get(codecId).mimeType.replace(/^video\//i, "") : null;
    const ms = rtt === null && buffer === null ? null : 1000 * ((rtt || 0) / 2 + (buffer || 0));
    return { ms, codec };
  }

  async update() {
    const now = performance.now();
    const shown = this.framesShown();
    this.fps = ((shown - this.lastFrames) * 1000) / Math.max(1, now - this.lastTime);
    this.lastFrames = shown;
    this.lastTime = now;
    const showing = () => this.timer !== null && ["connected", "unstable"].includes(this.source().state);
    if (!showing()) {
      this.element.textContent = "";
      return;
    }
    try {
      ({ ms: this.clientMs, codec: this.codec } = await this.#clientFigures(this.source().pc));
    } catch (_) {
      this.clientMs = this.codec = null;
    }
    if (!showing()) return; // stopped or disconnected while getStats() ran: stop() cleared the text
    const { lastStats } = this.source();
    const peer = lastStats && lastStats.peer;
    const stage = lastStats && lastStats.stage;
    // With nothing tracked (nobody in front of the webcam, or no performer) the p50 is an old one.
    const live = stage && (stage.source !== "webcam" || stage.tracked_per_s > 0);
    const serverMs = live && peer && peer.latency_ms && peer.latency_ms.p50 !== null ? peer.latency_ms.p50 : null;
    const parts = [`${this.fps.toFixed(1)} fps`];
    if (serverMs !== null) parts.push(`server ${Math.round(serverMs)} ms`);
    if (this.clientMs !== null) parts.push(`network+buffer ${Math.round(this.clientMs)} ms`);
    if (serverMs !== null && this.clientMs !== null) parts.push(`≈ ${Math.round(serverMs + this.clientMs)} ms total`);
    if (stage && stage.source === "webcam") parts.push(`tracking ${stage.tracked_per_s.toFixed(0)}/s`);
    if (peer && peer.bitrate) parts.push(`${Math.round(peer.bitrate / 1000)} kbit/s`);
    if (this.codec) parts.push(this.codec);
    if (stage && stage.error) parts.push(`⚠ ${stage.error}`);
    this.element.textContent = parts.join(" · ");
  }
}
