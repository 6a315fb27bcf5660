// What the performer and viewer pages share: buttons, connection state, messages in words,
// the avatar video with its overlay, ?stage= and ?autostart=1.

import { AvatarConnection } from "./connection.js";
import { StatsOverlay } from "./overlay.js";

const STAGE_NAME = /^[A-Za-z0-9_-]{1,64}$/;

export function pageOptions() {
  const params = new URLSearchParams(window.location.search);
  const stage = params.get("stage") || "main";
  return {
    stage: STAGE_NAME.test(stage) ? stage : "main",
    autostart: params.get("autostart") === "1",
  };
}

/**
 * Wire a page to one connection.
 * @param {object} options
 * @param {"performer"|"viewer"} options.role
 * @param {(joined: object) => Promise<MediaStream|null>} [options.getStream]
 * @param {() => void} [options.onStop] release the webcam etc.
 * @returns {AvatarConnection}
 */
export function setupPage({ role, getStream, onStop = () => {} }) {
  const { stage, autostart } = pageOptions();
  const $ = (id) => document.getElementById(id);
  const avatar = $("avatar");
  const stateEl = $("state");
  const messageEl = $("message");
  const startBtn = $("start");
  const stopBtn = $("stop");
  $("stage-name").textContent = stage;
  const viewerLink = $("viewer-link");
  if (viewerLink) viewerLink.href = `/view?stage=${encodeURIComponent(stage)}`;
  const xrLink = $("xr-link");
  if (xrLink) xrLink.href = `/xr?stage=${encodeURIComponent(stage)}`;

  const connection = new AvatarConnection({ role, stage, getStream });
  const overlay = new StatsOverlay(avatar, $("overlay"), () => connection);

  // For people: words. For automation: the same facts on window.avatarClient.
  const status = { role, stage, state: "idle", problems: [], joined: null, get stats() { return connection.lastStats; } };
  window.avatarClient = status;

  const showMessage = (text) => {
    messageEl.textContent = text;
    messageEl.hidden = !text;
  };

  connection.addEventListener("state", (event) => {
    const { state, text } = event.detail;
    status.state = state;
    stateEl.dataset.state = state;
    stateEl.textContent = text;
    if (state === "connected") showMessage("");
  });
  connection.addEventListener("problem", (event) => {
    status.problems.push(event.detail);
    showMessage(event.detail.message);
  });
  connection.addEventListener("joined", (event) => {
    status.joined = event.detail;
  });
  connection.addEventListener("stream", (event) => {
    avatar.srcObject = event.detail;
    avatar.play().catch(() => {
      /* autoplay of a muted video is allowed; a refusal resolves on the next user gesture */
    });
  });

  const start = () => {
    showMessage("");
    startBtn.hidden = true;
    stopBtn.hidden = false;
    overlay.start();
    connection.start();
  };
  const stop = () => {
    connection.stop();
    overlay.stop();
    avatar.srcObject = null;
    onStop();
    startBtn.hidden = false;
    stopBtn.hidden = true;
  };
  startBtn.addEventListener("click", start);
  stopBtn.addEventListener("click", stop);
  connection.addEventListener("state", (event) => {
    if (event.detail.state === "idle" && connection.stopped) {
      startBtn.hidden = false;
      stopBtn.hidden = true;
    }
  });
  if (autostart) start();
  return connection;
}
