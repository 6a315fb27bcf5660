// What the performer and viewer pages share: buttons, connection state, messages in words,
// the avatar video with its overlay, ?stage=, ?codec=, ?autostart=1, (performer page) ?key= and
// (viewer page) ?bare=1.

import { AvatarConnection, canPreferCodec } from "./connection.js";
import { StatsOverlay } from "./overlay.js";

const STAGE_NAME = /^[A-Za-z0-9_-]{1,64}$/;
/** The codecs the server sends the avatar in (``?codec=``). */
const CODECS = ["vp8", "h264"];

/**
 * ``?stage=`` (``main`` when absent or not a stage name: then ``refused`` holds the name given),
 * ``?codec=`` (null: the browser's first choice; an unknown one goes to ``refusedCodec``),
 * ``?autostart=1``, ``?bare=1`` (the video alone, on pages that allow it) and ``?key=`` (the
 * server's performer key).
 */
export function pageOptions() {
  const params = new URLSearchParams(window.location.search);
  const stage = params.get("stage") || "main";
  const valid = STAGE_NAME.test(stage);
  const codec = (params.get("codec") || "").toLowerCase();
  const knownCodec = CODECS.includes(codec);
  return {
    stage: valid ? stage : "main",
    refused: valid ? null : stage,
    codec: knownCodec ? codec : null,
    refusedCodec: codec && !knownCodec ? params.get("codec") : null,
    autostart: params.get("autostart") === "1",
    bare: params.get("bare") === "1",
    key: params.get("key"),
  };
}

/** The state pill's words once connected: a viewer of a webcam stage is told when nobody performs. */
function connectedWords(role, stats) {
  const stage = stats && stats.stage;
  if (role !== "performer" && stage && stage.source === "webcam" && stage.performer === false) {
    return "Connected: nobody is performing on this stage yet.";
  }
  return "Connected.";
}

/**
 * Wire a page to one connection.
 * @param {object} options
 * @param {"performer"|"viewer"} options.role
 * @param {(joined: object) => Promise<MediaStream|null>} [options.getStream]
 * @param {() => void} [options.onStop] release the webcam etc.
 * @param {boolean} [options.allowBare] the page may show the video alone (?bare=1).
 * @returns {AvatarConnection}
 */
export function setupPage({ role, getStream, onStop = () => {}, allowBare = false }) {
  const options = pageOptions();
  const { stage, refused, codec, refusedCodec } = options;
  // ?bare=1 (viewer page): the video alone, for capture into a video call, on the stage's own
  // background colour; it starts by itself, since its buttons are hidden.
  const bare = options.bare && allowBare;
  if (bare) document.body.classList.add("bare");
  const autostart = options.autostart || bare;
  const $ = (id) => document.getElementById(id);
  const avatar = $("avatar");
  const stateEl = $("state");
  const messageEl = $("message");
  const startBtn = $("start");
  const stopBtn = $("stop");
  const retryBtn = $("retry");
  $("stage-name").textContent = stage;
  const viewerLink = $("viewer-link");
  if (viewerLink) {
    viewerLink.href = `/view?stage=${encodeURIComponent(stage)}`;
    viewerLink.textContent = viewerLink.href; // the whole address, to copy and send to others
  }
  const xrLink = $("xr-link");
  if (xrLink) xrLink.href = `/xr?stage=${encodeURIComponent(stage)}`;

  // The performer key (?key=, from the URL "streamer serve" prints) goes to the server on joining.
  const key = role === "performer" ? options.key : null;
  const connection = new AvatarConnection({ role, stage, getStream, codec, key });
  const overlay = new StatsOverlay(avatar, $("overlay"), () => connection);

  // For people: words. For automation: the same facts on window.avatarClient.
  const status = {
    role,
    stage,
    state: "idle",
    problems: [],
    joined: null,
    get stats() {
      return connection.lastStats;
    },
    get connects() {
      return connection.connects;
    },
    get retryInMs() {
      return connection.retryInMs;
    },
    get pc() {
      return connection.pc;
    },
  };
  window.avatarClient = status;

  // A problem's words; when there is none, the standing notice (a refused ?stage= or ?codec=), if any.
  const notices = [];
  if (refused !== null) {
    notices.push(`“${refused.slice(0, 80)}” is not a stage name (letters, digits, - and _, at most 64): this is stage main.`);
  }
  if (refusedCodec !== null) {
    notices.push(`“${refusedCodec.slice(0, 80)}” is not a codec of this server (vp8, h264): the browser chooses.`);
  } else if (codec !== null && !canPreferCodec(codec)) {
    notices.push(`This browser cannot be asked for ${codec.toUpperCase()} first: it chooses the codec itself.`);
  }
  // (A bare page shows its standing notices only until connected: they would cover the video.)
  const showMessage = (text) => {
    const words = text || (bare && connection.state === "connected" ? "" : notices.join(" "));
    if (messageEl.textContent !== words) messageEl.textContent = words; // (an alert: said once)
    messageEl.hidden = !messageEl.textContent;
  };
  showMessage("");

  // The pill shows the state, short (while reconnecting, its countdown ticks every second); a
  // hidden live region tells screen readers once per change of state or of its words, not at
  // every tick.
  const announcer = document.createElement("span");
  announcer.className = "visually-hidden";
  announcer.setAttribute("role", "status");
  stateEl.after(announcer);
  const showState = (text, spoken = text) => {
    if (stateEl.textContent !== text) stateEl.textContent = text;
    if (announcer.textContent !== spoken) announcer.textContent = spoken;
  };
  let reasonShown = null; // the message line's words when they are the reconnect's reason
  let problemAttempt = null; // the connection attempt whose problem the message line says
  connection.addEventListener("state", (event) => {
    const { state, text, reason, wait } = event.detail;
    const focusWasOnRetry = retryBtn && document.activeElement === retryBtn;
    status.state = state;
    stateEl.dataset.state = state;
    stateEl.title = state === "reconnecting" ? reason : "";
    if (state === "reconnecting") {
      // A long reason would stretch the pill (over two lines on a phone): the pill counts down,
      // the message line says what went wrong, unless it says the words of a problem of this same
      // attempt (the server's "full" explains the lost connection that follows it; a later
      // attempt's failure is news).
      const problemNow = problemAttempt === connection.connects && messageEl.textContent !== reasonShown;
      // The lost stream's last picture would stay up, frozen (black on some browsers): show the
      // page's own background instead and, where the state pill is hidden (?bare=1), the countdown.
      avatar.srcObject = null;
      if (bare) showMessage(text);
      else if (!problemNow) showMessage((reasonShown = reason));
      // (the message line is an alert: the status announcer need not say the reason twice)
      showState(wait, bare || problemNow ? `${reason} Reconnecting…` : "Reconnecting…");
    } else {
      showState(state === "connected" ? connectedWords(role, connection.lastStats) : text);
    }
    // (the reason stays said while the next attempt connects: it goes once connected or stopped)
    if ((state === "connected" || state === "idle") && reasonShown !== null) {
      if (messageEl.textContent === reasonShown) showMessage("");
      reasonShown = null;
    }
    if (state === "connected") showMessage("");
    if (retryBtn) retryBtn.hidden = state !== "reconnecting";
    if (focusWasOnRetry && retryBtn.hidden) stopBtn.focus(); // not back to the page's start
  });
  connection.addEventListener("stats", (event) => {
    if (connection.state === "connected") showState(connectedWords(role, event.detail));
  });
  connection.addEventListener("problem", (event) => {
    status.problems.push(event.detail);
    if (event.detail.code !== "codec") problemAttempt = connection.connects; // (codec: a standing notice)
    // the browser would not reorder its codecs: true for the whole visit, so it stays said
    if (event.detail.code === "codec" && !notices.includes(event.detail.message)) notices.push(event.detail.message);
    showMessage(event.detail.message);
  });
  connection.addEventListener("joined", (event) => {
    status.joined = event.detail;
    const rgb = event.detail.background;
    if (bare && Array.isArray(rgb) && rgb.length === 3) {
      const colour = `rgb(${rgb.map((c) => Math.round(255 * Math.min(1, Math.max(0, Number(c) || 0)))).join(", ")})`;
      document.body.style.background = avatar.style.background = colour; // letterbox in the video's colour
    }
  });
  connection.addEventListener("stream", (event) => {
    avatar.srcObject = event.detail;
    avatar.play().catch(() => {
      /* autoplay of a muted video is allowed; a refusal resolves on the next user gesture */
    });
  });

  // A button that hides itself would drop keyboard focus to the page's start: hand it on.
  const swap = (hide, show) => {
    const focused = document.activeElement === hide;
    hide.hidden = true;
    show.hidden = false;
    if (focused) show.focus();
  };
  const start = () => {
    showMessage("");
    swap(startBtn, stopBtn);
    overlay.start();
    connection.start();
  };
  // However the connection stopped (Stop pressed, another performer took the stage, the camera
  // refused): the webcam is released, the picture and the figures go, Start comes back.
  const release = () => {
    overlay.stop();
    avatar.srcObject = null;
    onStop();
    swap(stopBtn, startBtn);
  };
  startBtn.addEventListener("click", start);
  stopBtn.addEventListener("click", () => connection.stop());
  if (retryBtn) retryBtn.addEventListener("click", () => connection.retryNow());
  connection.addEventListener("state", (event) => {
    if (event.detail.state === "idle" && connection.stopped) release();
  });
  if (autostart) start();
  return connection;
}
