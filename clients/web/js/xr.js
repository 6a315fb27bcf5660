// The VR viewer page: the avatar video as a life-size billboard in an immersive WebXR session; the
// head pose drives the viewer's orbit camera on the server (see xr-orbit.js). Without a headset
// (or without WebXR) the page is a plain viewer and says so.

import { setupPage } from "./page.js";
import { ANCHOR, billboardYaw, orbitChanged, orbitFromHead } from "./xr-orbit.js";

const connection = setupPage({ role: "viewer" });
const video = document.getElementById("avatar");
const enterBtn = document.getElementById("enter-vr");
const statusEl = document.getElementById("xr-status");

/** Side of the billboard in metres: the stage camera frames a standing person with a margin. */
const QUAD_SIZE = 2.2;
/** Orbit messages at most this often while the head moves (the server renders at most fps anyway). */
const SEND_INTERVAL_MS = 33;

// For automation and support: what the page found and did.
const xrStatus = { supported: null, session: false, orbitsSent: 0, lastOrbit: null };
window.avatarXR = xrStatus;

/**
 * Ask the server for the avatar seen from a head position (room coordinates); true when an orbit
 * message went out. The session calls it every frame; automation may call it as
 * `window.avatarXR.lookFrom({x, y, z})` to drive the same path without a headset.
 */
function lookFrom(head) {
  const orbit = orbitFromHead(head);
  if (!orbitChanged(xrStatus.lastOrbit, orbit)) return false;
  if (!connection.sendControl({ type: "orbit", ...orbit })) return false;
  xrStatus.lastOrbit = orbit;
  xrStatus.orbitsSent += 1;
  return true;
}
xrStatus.lookFrom = lookFrom;

function say(text) {
  statusEl.textContent = text;
}

async function detect() {
  if (!navigator.xr) {
    xrStatus.supported = false;
    say("This browser has no WebXR: the avatar is shown as a flat video. Open this page in a VR headset's browser.");
    return;
  }
  try {
    xrStatus.supported = await navigator.xr.isSessionSupported("immersive-vr");
  } catch {
    xrStatus.supported = false;
  }
  enterBtn.disabled = !xrStatus.supported;
  say(
    xrStatus.supported
      ? "VR headset found: press Enter VR."
      : "No VR headset is available to this browser: the avatar is shown as a flat video.",
  );
}

// -- WebGL: one textured quad ----------------------------------------------------------------

const VERTEX = `#version 300 es
in vec2 corner;
uniform mat4 projection, view, model;
out vec2 uv;
void main() {
  uv = vec2(corner.x + 0.5, 0.5 - corner.y);
  gl_Position = projection * view * model * vec4(corner, 0.0, 1.0);
}`;
// The server renders on white: near-white pixels are dropped, so the avatar stands free in the room.
const FRAGMENT = `#version 300 es
precision mediump float;
in vec2 uv;
uniform sampler2D picture;
out vec4 color;
void main() {
  vec3 c = texture(picture, uv).rgb;
  if (min(c.r, min(c.g, c.b)) > 0.94) discard;
  color = vec4(c, 1.0);
}`;

function compile(gl, type, source) {
  const shader = gl.createShader(type);
  gl.shaderSource(shader, source);
  gl.compileShader(shader);
  if (!gl.getShaderParameter(shader, gl.COMPILE_STATUS)) throw new Error(gl.getShaderInfoLog(shader));
  return shader;
}

function makeScene(gl) {
  const program = gl.createProgram();
  gl.attachShader(program, compile(gl, gl.VERTEX_SHADER, VERTEX));
  gl.attachShader(program, compile(gl, gl.FRAGMENT_SHADER, FRAGMENT));
  gl.linkProgram(program);
  if (!gl.getProgramParameter(program, gl.LINK_STATUS)) throw new Error(gl.getProgramInfoLog(program));
  const buffer = gl.createBuffer();
  gl.bindBuffer(gl.ARRAY_BUFFER, buffer);
  gl.bufferData(gl.ARRAY_BUFFER, new Float32Array([-0.5, -0.5, 0.5, -0.5, -0.5, 0.5, 0.5, 0.5]), gl.STATIC_DRAW);
  const texture = gl.createTexture();
  gl.bindTexture(gl.TEXTURE_2D, texture);
  gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MIN_FILTER, gl.LINEAR);
  gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_S, gl.CLAMP_TO_EDGE);
  gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_T, gl.CLAMP_TO_EDGE);
  const at = (name) => gl.getUniformLocation(program, name);
  return { program, buffer, texture, corner: gl.getAttribLocation(program, "corner"),
           projection: at("projection"), view: at("view"), model: at("model") };
}

/** Column-major model matrix: translate(anchor) * rotateY(yaw) * scale(size). */
function modelMatrix(yaw, size) {
  const c = Math.cos(yaw) * size;
  const s = Math.sin(yaw) * size;
  return new Float32Array([c, 0, -s, 0, 0, size, 0, 0, s, 0, c, 0, ANCHOR.x, ANCHOR.y, ANCHOR.z, 1]);
}

// -- the immersive session ---------------------------------------------------------------------

async function enterVR() {
  const session = await navigator.xr.requestSession("immersive-vr", { optionalFeatures: ["local-floor"] });
  const canvas = document.createElement("canvas");
  const gl = canvas.getContext("webgl2", { xrCompatible: true });
  await session.updateRenderState({ baseLayer: new XRWebGLLayer(session, gl) });
  let space;
  try {
    space = await session.requestReferenceSpace("local-floor");
  } catch {
    // "local" puts the origin at the head: lift the room so that the anchor stays at chest height
    space = (await session.requestReferenceSpace("local")).getOffsetReferenceSpace(
      new XRRigidTransform({ x: 0, y: -1.6, z: 0 }),
    );
  }
  const scene = makeScene(gl);
  xrStatus.session = true;
  enterBtn.disabled = true;
  say("In VR: walk around the avatar.");
  let lastSent = 0;

  const frame = (time, xrFrame) => {
    session.requestAnimationFrame(frame);
    const pose = xrFrame.getViewerPose(space);
    if (!pose) return;
    const head = pose.transform.position;
    if (time - lastSent >= SEND_INTERVAL_MS && lookFrom(head)) lastSent = time;
    const layer = session.renderState.baseLayer;
    gl.bindFramebuffer(gl.FRAMEBUFFER, layer.framebuffer);
    gl.clearColor(0.08, 0.09, 0.11, 1);
    gl.clear(gl.COLOR_BUFFER_BIT | gl.DEPTH_BUFFER_BIT);
    gl.useProgram(scene.program);
    gl.bindTexture(gl.TEXTURE_2D, scene.texture);
    if (video.readyState >= 2) gl.texImage2D(gl.TEXTURE_2D, 0, gl.RGB, gl.RGB, gl.UNSIGNED_BYTE, video);
    gl.bindBuffer(gl.ARRAY_BUFFER, scene.buffer);
    gl.enableVertexAttribArray(scene.corner);
    gl.vertexAttribPointer(scene.corner, 2, gl.FLOAT, false, 0, 0);
    gl.uniformMatrix4fv(scene.model, false, modelMatrix(billboardYaw(head), QUAD_SIZE));
    for (const view of pose.views) {
      const vp = layer.getViewport(view);
      gl.viewport(vp.x, vp.y, vp.width, vp.height);
      gl.uniformMatrix4fv(scene.projection, false, view.projectionMatrix);
      gl.uniformMatrix4fv(scene.view, false, view.transform.inverse.matrix);
      gl.drawArrays(gl.TRIANGLE_STRIP, 0, 4);
    }
  };
  session.requestAnimationFrame(frame);
  session.addEventListener("end", () => {
    xrStatus.session = false;
    enterBtn.disabled = !xrStatus.supported;
    say("Left VR.");
    connection.sendControl({ type: "orbit", azimuth: 0, elevation: 0, zoom: 1 });
    xrStatus.lastOrbit = null;
  });
}

enterBtn.addEventListener("click", () => {
  // Not watching yet (no ?autostart=1, or stopped): the headset would show an empty room.
  const startBtn = document.getElementById("start");
  if (connection.stopped && !startBtn.hidden) startBtn.click();
  enterVR().catch((error) => say(`Could not start VR: ${error.message}`));
});
detect();
