// The viewer page: receives the avatar; drag to orbit the camera, scroll to zoom.

import { setupPage } from "./page.js";

const connection = setupPage({ role: "viewer" });
const screen = document.querySelector(".screen");
const orbit = { azimuth: 0, elevation: 0, zoom: 1 };
const DEG_PER_PIXEL = 0.4;
let drag = null;
let pending = false;

function sendOrbit() {
  // At most one message per animation frame while dragging.
  if (pending) return;
  pending = true;
  requestAnimationFrame(() => {
    pending = false;
    connection.sendControl({ type: "orbit", ...orbit });
  });
}

screen.addEventListener("pointerdown", (event) => {
  drag = { x: event.clientX, y: event.clientY, azimuth: orbit.azimuth, elevation: orbit.elevation };
  screen.setPointerCapture(event.pointerId);
});
screen.addEventListener("pointermove", (event) => {
  if (!drag) return;
  orbit.azimuth = (drag.azimuth - (event.clientX - drag.x) * DEG_PER_PIXEL + 360) % 360;
  orbit.elevation = Math.max(-80, Math.min(80, drag.elevation + (event.clientY - drag.y) * DEG_PER_PIXEL));
  sendOrbit();
});
screen.addEventListener("pointerup", () => {
  drag = null;
});
screen.addEventListener(
  "wheel",
  (event) => {
    event.preventDefault();
    orbit.zoom = Math.max(0.3, Math.min(4, orbit.zoom * Math.exp(event.deltaY * 0.001)));
    sendOrbit();
  },
  { passive: false },
);
document.getElementById("reset-view").addEventListener("click", () => {
  Object.assign(orbit, { azimuth: 0, elevation: 0, zoom: 1 });
  sendOrbit();
});
// A new connection starts from the stage camera: send the current orbit again once it can.
connection.addEventListener("control-open", () => {
  if (orbit.azimuth || orbit.elevation || orbit.zoom !== 1) sendOrbit();
});
