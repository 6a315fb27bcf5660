// Head pose in the room -> the viewer's orbit camera on the server (pure functions, no WebXR).
//
// In VR the avatar stands in the room like a life-size hologram: its video is drawn on a
// billboard at ANCHOR, facing +Z (towards where the person stood when the session started).
// Wherever the head goes, the server renders the avatar from that direction and distance, so
// walking around the billboard walks around the avatar.
//
// Room coordinates are WebXR's "local-floor" space: metres, +Y up, the person started at the
// origin looking down -Z. The orbit follows streamer/stream/protocol.py's Orbit: azimuth in
// degrees about +Y from the avatar's front (+Z), elevation in degrees up, zoom = distance factor.

/** Where the avatar stands: 2 m in front of the start position, centre at chest height. */
export const ANCHOR = Object.freeze({ x: 0, y: 1.1, z: -2 });
/** Head distance (m) that shows the avatar at the stage camera's own framing (zoom 1). */
export const REFERENCE_DISTANCE = 2;

const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));
const round1 = (v) => Math.round(v * 10) / 10;

/**
 * @param {{x: number, y: number, z: number}} head head position in room coordinates (metres)
 * @param {{x: number, y: number, z: number}} [anchor] where the avatar stands
 * @returns {{azimuth: number, elevation: number, zoom: number}} the orbit message fields
 */
export function orbitFromHead(head, anchor = ANCHOR) {
  const dx = head.x - anchor.x;
  const dy = head.y - anchor.y;
  const dz = head.z - anchor.z;
  const horizontal = Math.hypot(dx, dz);
  const distance = Math.max(1e-3, Math.hypot(horizontal, dy));
  const azimuth = (((Math.atan2(dx, dz) * 180) / Math.PI) % 360 + 360) % 360;
  const elevation = clamp((Math.atan2(dy, horizontal) * 180) / Math.PI, -80, 80);
  return {
    azimuth: round1(azimuth),
    elevation: round1(elevation),
    zoom: clamp(Math.round((distance / REFERENCE_DISTANCE) * 1000) / 1000, 0.3, 4),
  };
}

/** Whether two orbits would give different pictures (the server shares renders within 0.1 deg / 0.1 %). */
export function orbitChanged(a, b) {
  return !a || a.azimuth !== b.azimuth || a.elevation !== b.elevation || a.zoom !== b.zoom;
}

/**
 * Yaw (radians about +Y) that turns a quad at `anchor` to face the head: the billboard's normal
 * points from the anchor towards the head, in the horizontal plane.
 */
export function billboardYaw(head, anchor = ANCHOR) {
  return Math.atan2(head.x - anchor.x, head.z - anchor.z);
}
