// The viewer page: receives the avatar; drag to orbit the camera, scroll or pinch to zoom, or use
// the keyboard on the focused video (arrow keys orbit, + and - zoom, 0 or Home: front view).

import { setupPage } from "./page.js";

const connection = setupPage({ role: "viewer", allowBare: true });
const screen = document.querySelector(".screen");
const orbit = { azimuth: 0, elevation: 0, zoom: 1 };
window.avatarOrbit = orbit; // for automation: the orbit this page asks for
const DEG_PER_PIXEL = 0.4;
const DEG_PER_KEY = 15;
const ZOOM_PER_KEY = 1.2;
const pointers = new Map(); // pointerId -> {x, y}: one drags, two pinch
let drag = null;
let pinch = null;
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

function setOrbit({ azimuth = orbit.azimuth, elevation = orbit.elevation, zoom = orbit.zoom }) {
  orbit.azimuth = ((azimuth % 360) + 360) % 360;
  orbit.elevation = Math.max(-80, Math.min(80, elevation));
  orbit.zoom = Math.max(0.3, Math.min(4, zoom));
  sendOrbit();
}

function spread() {
  const [a, b] = [...pointers.values()];
  return Math.hypot(a.x - b.x, a.y - b.y);
}

screen.addEventListener("pointerdown", (event) => {
  pointers.set(event.pointerId, { x: event.clientX, y: event.clientY });
  screen.setPointerCapture(event.pointerId);
  if (pointers.size === 1) {
    drag = { x: event.clientX, y: event.clientY, azimuth: orbit.azimuth, elevation: orbit.elevation };
  } else if (pointers.size === 2) {
    drag = null; // two fingers: pinch to zoom
    pinch = { spread: Math.max(1, spread()), zoom: orbit.zoom };
  }
});
screen.addEventListener("pointermove", (event) => {
  if (!pointers.has(event.pointerId)) return;
  pointers.set(event.pointerId, { x: event.clientX, y: event.clientY });
  if (pinch && pointers.size === 2) {
    setOrbit({ zoom: (pinch.zoom * pinch.spread) / Math.max(1, spread()) }); // fingers apart: closer
  } else if (drag) {
    setOrbit({
      azimuth: drag.azimuth - (event.clientX - drag.x) * DEG_PER_PIXEL,
      elevation: drag.elevation + (event.clientY - drag.y) * DEG_PER_PIXEL,
    });
  }
});
function endPointer(event) {
  pointers.delete(event.pointerId);
  if (pointers.size < 2) pinch = null;
  if (pointers.size === 0) drag = null;
}
for (const type of ["pointerup", "pointercancel", "lostpointercapture"]) screen.addEventListener(type, endPointer);
screen.addEventListener(
  "wheel",
  (event) => {
    event.preventDefault();
    setOrbit({ zoom: orbit.zoom * Math.exp(event.deltaY * 0.001) });
  },
  { passive: false },
);
screen.addEventListener("keydown", (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey) return; // the browser's (page zoom, back)
  // As dragging: ArrowLeft = dragging left, ArrowUp = dragging up.
  const keys = {
    ArrowLeft: () => setOrbit({ azimuth: orbit.azimuth + DEG_PER_KEY }),
    ArrowRight: () => setOrbit({ azimuth: orbit.azimuth - DEG_PER_KEY }),
    ArrowUp: () => setOrbit({ elevation: orbit.elevation - DEG_PER_KEY }),
    ArrowDown: () => setOrbit({ elevation: orbit.elevation + DEG_PER_KEY }),
    "+": () => setOrbit({ zoom: orbit.zoom / ZOOM_PER_KEY }),
    "=": () => setOrbit({ zoom: orbit.zoom / ZOOM_PER_KEY }),
    "-": () => setOrbit({ zoom: orbit.zoom * ZOOM_PER_KEY }),
    0: () => setOrbit({ azimuth: 0, elevation: 0, zoom: 1 }),
    Home: () => setOrbit({ azimuth: 0, elevation: 0, zoom: 1 }),
  };
  const action = keys[event.key];
  if (!action) return;
  event.preventDefault();
  action();
});
document.getElementById("reset-view").addEventListener("click", () => setOrbit({ azimuth: 0, elevation: 0, zoom: 1 }));
// A new connection starts from the stage camera: send the current orbit again once it can.
connection.addEventListener("control-open", () => {
  if (orbit.azimuth || orbit.elevation || orbit.zoom !== 1) sendOrbit();
});
