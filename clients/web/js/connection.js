// One connection to the avatar server: websocket signalling + RTCPeerConnection + data channel,
// reconnecting (with back-off) whenever the websocket or the peer connection drops.
//
// Signalling (see streamer/stream/protocol.py): join -> joined, offer -> answer, error.
// aiortc does not trickle ICE, so the offer is sent once ICE gathering is complete.
//
// Events (EventTarget): "state" {detail: {state, text, reason?, wait?}} (while reconnecting, ``text``
// = ``reason`` (what went wrong) + ``wait`` ("Reconnecting in N s…")), "stream" {detail: MediaStream},
// "stats" {detail: stats message}, "problem" {detail: {code, message}}, "joined" {detail: msg},
// "control-open" (the data channel is ready for sendControl).

const RECONNECT_MIN_MS = 1000;
const RECONNECT_MAX_MS = 10000;
const ICE_GATHER_TIMEOUT_MS = 5000;
const NO_MEDIA_TIMEOUT_MS = 20000;

/** Words for the person, per server error code. */
const ERROR_WORDS = {
  replaced: "Another performer took over this stage.",
  busy: "The server is full; try again later.",
  forbidden: "This server lets only holders of its performer key perform: open the performer link that “streamer serve” printed (it ends in ?key=…). Viewer pages need no key.",
  bad_sdp: "The server could not use this browser's video offer.",
  too_large: "A message to the server was too large.",
  timeout: "Starting the video took too long (was the camera prompt left open?); trying again.",
  internal: "The server had a problem.",
};
/** Codes whose words say it all: the server's own message would only repeat them. */
const SELF_EXPLAINED = new Set(["replaced", "timeout", "forbidden"]);

/** The browser's video codecs it can receive (RTCRtpCodec[]), or null if it does not say. */
function receiveCodecs() {
  const caps = window.RTCRtpReceiver && RTCRtpReceiver.getCapabilities && RTCRtpReceiver.getCapabilities("video");
  return caps ? caps.codecs : null;
}

/** Whether this browser can be asked for ``codec`` ("vp8" or "h264") first. */
export function canPreferCodec(codec) {
  const codecs = receiveCodecs();
  return (
    codecs !== null &&
    typeof RTCRtpTransceiver !== "undefined" &&
    "setCodecPreferences" in RTCRtpTransceiver.prototype &&
    codecs.some((c) => c.mimeType.toLowerCase() === `video/${codec}`)
  );
}

/**
 * Offer ``codec`` ("vp8" or "h264") first in every video transceiver (the one video section carries
 * both directions). False when the browser has no such codec or cannot reorder its codecs.
 */
function preferCodec(pc, codec) {
  if (!canPreferCodec(codec)) return false;
  const codecs = receiveCodecs();
  const isIt = (c) => c.mimeType.toLowerCase() === `video/${codec}`;
  const first = codecs.filter(isIt);
  try {
    for (const transceiver of pc.getTransceivers()) {
      transceiver.setCodecPreferences([...first, ...codecs.filter((c) => !isIt(c))]);
    }
  } catch (_) {
    return false;
  }
  return true;
}

export function wsUrl(location) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/ws`;
}

export class AvatarConnection extends EventTarget {
  /**
   * @param {object} options
   * @param {"performer"|"viewer"} options.role
   * @param {string} options.stage
   * @param {(joined: object, stopped: () => boolean) => Promise<MediaStream|null>} [options.getStream]
   *   the webcam to send, asked for once the server said what drives the stage (joined.source:
   *   "webcam" or "motion"); ``stopped()`` tells it, after the camera prompt, whether Stop (or a
   *   takeover) came meanwhile, so that it turns a camera nobody wants any more off again.
   * @param {string} [options.url] websocket URL (default: this page's server).
   * @param {"vp8"|"h264"|null} [options.codec] the avatar video's codec, offered first (null: the
   *   browser's order; the server answers with the first of VP8 and H.264 that the offer lists).
   * @param {string|null} [options.key] the server's performer key (streamer serve --performer-key).
   */
  constructor({ role, stage, getStream = async () => null, url = wsUrl(window.location), codec = null, key = null }) {
    super();
    this.role = role;
    this.stage = stage;
    this.codec = codec;
    this.key = key;
    this.getStream = getStream;
    this.url = url;
    this.ws = null;
    this.pc = null;
    this.channel = null;
    this.stopped = true;
    this.attempt = 0;
    this.retryTimer = null;
    this.countdown = null; // ticks the "Reconnecting in N s" text
    this.retryDue = null; // performance.now() of the next reconnect, while waiting for it
    this.connects = 0; // connection attempts so far (automation: window.avatarClient.connects)
    this.mediaTimer = null;
    this.state = "idle";
    this.lastStats = null;
    this.generation = 0; // ignores events of connections that were replaced
  }

  start() {
    if (!this.stopped) return;
    this.stopped = false;
    this.attempt = 0;
    this.#connect();
  }

  /** Close everything and stay closed; ``text`` says why (a refusal, or the person pressed Stop). */
  stop(text = "Stopped.") {
    this.stopped = true;
    this.#cancelRetry();
    this.#teardown();
    this.#setState("idle", text);
  }

  /** While waiting to reconnect: reconnect now instead of at the end of the back-off. */
  retryNow() {
    if (this.stopped || this.state !== "reconnecting") return;
    this.#cancelRetry();
    this.#connect();
  }

  /** Send a data-channel message (orbit, stats); false while not connected. */
  sendControl(message) {
    if (!this.channel || this.channel.readyState !== "open") return false;
    this.channel.send(JSON.stringify(message));
    return true;
  }

  #setState(state, text, extra = {}) {
    this.state = state;
    this.dispatchEvent(new CustomEvent("state", { detail: { state, text, ...extra } }));
  }

  #problem(code, message) {
    this.dispatchEvent(new CustomEvent("problem", { detail: { code, message } }));
  }

  #teardown() {
    this.generation += 1;
    clearTimeout(this.mediaTimer);
    if (this.channel) this.channel.close();
    if (this.pc) this.pc.close();
    if (this.ws) {
      try {
        if (this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify({ type: "bye" }));
        this.ws.close();
      } catch (_) {
        /* already closed */
      }
    }
    this.ws = this.pc = this.channel = null;
    this.lastStats = null; // the figures were this connection's: none are shown while reconnecting
  }

  #cancelRetry() {
    clearTimeout(this.retryTimer);
    clearInterval(this.countdown);
    this.retryTimer = this.countdown = this.retryDue = null;
  }

  /** Milliseconds until the next reconnect; null when none is waiting. */
  get retryInMs() {
    return this.retryDue === null ? null : Math.max(0, this.retryDue - performance.now());
  }

  #retry(reason) {
    this.#teardown();
    if (this.stopped) return;
    this.#cancelRetry();
    // (spread by ±20%: pages that lost one server together do not all come back at the same moment)
    const backoff = Math.min(RECONNECT_MAX_MS, RECONNECT_MIN_MS * 2 ** this.attempt);
    const delay = Math.round(backoff * (0.8 + 0.4 * Math.random()));
    this.attempt += 1;
    const due = performance.now() + delay;
    const say = () => {
      const left = Math.max(1, Math.ceil((due - performance.now()) / 1000));
      const wait = `Reconnecting in ${left} s…`;
      this.#setState("reconnecting", `${reason} ${wait}`, { reason, wait });
    };
    say();
    this.retryDue = due;
    this.countdown = setInterval(say, 1000);
    this.retryTimer = setTimeout(() => {
      this.#cancelRetry();
      this.#connect();
    }, delay);
  }

  #connect() {
    const generation = ++this.generation;
    this.connects += 1;
    const current = () => generation === this.generation && !this.stopped;
    this.#setState("connecting", "Connecting to the avatar server…");
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch (err) {
      this.#retry(`Cannot open the signalling connection (${err.message}).`);
      return;
    }
    this.ws = ws;
    let opened = false;
    ws.onopen = () => {
      if (!current()) return;
      opened = true;
      const join = { type: "join", role: this.role, stage: this.stage };
      if (this.key) join.key = this.key;
      ws.send(JSON.stringify(join));
    };
    ws.onmessage = async (event) => {
      if (!current()) return;
      let msg;
      try {
        msg = JSON.parse(event.data);
      } catch (_) {
        return;
      }
      try {
        if (msg.type === "joined") await this.#negotiate(msg, current);
        else if (msg.type === "answer") await this.pc.setRemoteDescription({ type: "answer", sdp: msg.sdp });
        else if (msg.type === "error") this.#serverError(msg);
      } catch (err) {
        if (!current()) return;
        this.#problem(err.code || err.name || "client", err.message || String(err));
        if (err.fatal) this.stop("Not connected.");
        else this.#retry(`Connection set-up failed: ${err.message || err}.`);
      }
    };
    ws.onclose = () => {
      if (!current()) return;
      this.#retry(
        opened
          ? "The connection to the avatar server was lost."
          : "The avatar server is not reachable (is “streamer serve” running?).",
      );
    };
  }

  #serverError(msg) {
    const words = ERROR_WORDS[msg.code] || "The server refused the connection.";
    this.#problem(msg.code, SELF_EXPLAINED.has(msg.code) ? words : `${words} (${msg.message})`);
    if (msg.code === "replaced") this.stop("Not connected: another performer has this stage.");
    if (msg.code === "forbidden") this.stop("Not connected: this server needs its performer key.");
    // The same offer or message would be refused again: trying again cannot help.
    if (msg.code === "bad_sdp" || msg.code === "too_large") this.stop("Not connected.");
  }

  async #negotiate(joined, current) {
    this.dispatchEvent(new CustomEvent("joined", { detail: joined }));
    // may throw (camera permission): shown by the page
    const stream = await this.getStream(joined, () => this.stopped);
    if (!current()) return;
    const pc = new RTCPeerConnection({ iceServers: joined.ice_servers || [] });
    this.pc = pc;
    if (stream && stream.getVideoTracks().length) {
      for (const track of stream.getVideoTracks()) {
        pc.addTrack(track, stream);
        // The camera went away (unplugged, taken by another app, permission withdrawn): start
        // again, which asks for it anew and says so in words if it is gone for good.
        track.addEventListener("ended", () => {
          if (current()) this.#retry("The camera stopped (unplugged, or another app took it).");
        });
      }
    } else {
      pc.addTransceiver("video", { direction: "recvonly" });
    }
    // (a browser without the codec is told on the page from the start: canPreferCodec)
    if (this.codec && canPreferCodec(this.codec) && !preferCodec(pc, this.codec)) {
      this.#problem("codec", `This browser refused to put ${this.codec.toUpperCase()} first; it uses its own choice.`);
    }
    const channel = pc.createDataChannel("control");
    this.channel = channel;
    channel.onopen = () => {
      if (current()) this.dispatchEvent(new CustomEvent("control-open"));
    };
    channel.onmessage = (event) => {
      if (!current()) return;
      let msg;
      try {
        msg = JSON.parse(event.data);
      } catch (_) {
        return;
      }
      if (msg.type === "stats") {
        this.lastStats = msg;
        this.dispatchEvent(new CustomEvent("stats", { detail: msg }));
      } else if (msg.type === "error") {
        this.#problem(msg.code, msg.message);
      }
    };
    pc.ontrack = (event) => {
      if (!current()) return;
      const media = event.streams && event.streams[0] ? event.streams[0] : new MediaStream([event.track]);
      this.dispatchEvent(new CustomEvent("stream", { detail: media }));
    };
    pc.onconnectionstatechange = () => {
      if (!current()) return;
      const s = pc.connectionState;
      if (s === "connected") {
        clearTimeout(this.mediaTimer);
        this.attempt = 0;
        this.#setState("connected", "Connected.");
      } else if (s === "failed" || s === "closed") {
        this.#retry(`The video connection ${s}.`);
      } else if (s === "disconnected") {
        this.#setState("unstable", "The video connection is unstable…");
      }
    };
    this.mediaTimer = setTimeout(() => {
      if (current() && pc.connectionState !== "connected") this.#retry("The video connection did not come up.");
    }, NO_MEDIA_TIMEOUT_MS);
    await pc.setLocalDescription(await pc.createOffer());
    await gatheringComplete(pc);
    if (!current()) return;
    this.ws.send(JSON.stringify({ type: "offer", sdp: pc.localDescription.sdp }));
    this.#setState("negotiating", "Starting the video…");
  }
}

/** Resolves when ICE gathering is complete (or after a timeout: send what we have). */
function gatheringComplete(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(done, ICE_GATHER_TIMEOUT_MS);
    function done() {
      clearTimeout(timer);
      pc.removeEventListener("icegatheringstatechange", check);
      resolve();
    }
    function check() {
      if (pc.iceGatheringState === "complete") done();
    }
    pc.addEventListener("icegatheringstatechange", check);
  });
}

/** Words for a getUserMedia failure. */
export function cameraErrorWords(err) {
  switch (err && err.name) {
    case "NotAllowedError":
    case "SecurityError":
      return "Camera permission was denied. Allow camera access for this page in the browser, then press Start.";
    case "NotFoundError":
    case "OverconstrainedError":
      return "No camera was found. Connect a webcam, then press Start.";
    case "NotReadableError":
    case "AbortError":
      return "The camera could not be started: another program may be using it.";
    case "TypeError":
      return "This page cannot use the camera: open it as http://localhost or over HTTPS.";
    default:
      return `The camera could not be started (${(err && (err.message || err.name)) || err}).`;
  }
}
