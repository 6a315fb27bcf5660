// The performer page: sends the webcam, shows it mirrored, and shows the avatar it drives.

import { cameraErrorWords } from "./connection.js";
import { setupPage } from "./page.js";

const preview = document.getElementById("preview");
const note = document.getElementById("preview-note");
let webcam = null;
const NO_WEBCAM = "No webcam (see the message above): press Start to ask again.";

/**
 * The webcam (asked for once, kept across reconnects); null when the stage plays a motion file, or
 * when the page stopped while the browser asked for the camera (then the camera goes off again).
 */
async function getStream(joined, stopped) {
  // (an empty webcam box, or an empty column beside the avatar, would suggest something is wrong)
  const motion = joined.source !== "webcam";
  preview.hidden = motion;
  document.querySelector("main").classList.toggle("no-webcam", motion);
  if (motion) {
    note.textContent = "This server plays a motion file: your webcam is not used.";
    return null;
  }
  if (webcam && webcam.getVideoTracks().some((t) => t.readyState === "live")) return webcam;
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    const err = new Error(cameraErrorWords({ name: "TypeError" }));
    err.fatal = true;
    err.code = "camera";
    throw err;
  }
  note.textContent = "Asking for your webcam…";
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({
      video: { width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 30 } },
      audio: false,
    });
  } catch (cause) {
    const err = new Error(cameraErrorWords(cause));
    err.fatal = true;
    err.code = "camera";
    note.textContent = NO_WEBCAM;
    throw err;
  }
  // Stopped meanwhile, or Stop then Start during the prompt (another ask got the camera first):
  // this camera is not wanted, and must not be left running unseen.
  const live = webcam && webcam.getVideoTracks().some((t) => t.readyState === "live");
  if (stopped() || live) {
    stream.getTracks().forEach((t) => t.stop());
    return stopped() ? null : webcam;
  }
  webcam = stream;
  preview.srcObject = webcam;
  note.textContent = "Move: the avatar follows you (mirrored, like a mirror).";
  return webcam;
}

function releaseWebcam() {
  if (webcam) webcam.getTracks().forEach((t) => t.stop());
  webcam = null;
  preview.srcObject = null;
  // (a motion-file stage keeps its note; a refused camera keeps saying so)
  if (!preview.hidden && note.textContent !== NO_WEBCAM) note.textContent = "Your webcam starts when you press Start.";
}

setupPage({ role: "performer", getStream, onStop: releaseWebcam });
