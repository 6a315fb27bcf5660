"""End to end over loopback WebRTC: a performer sends the real video of a person as its webcam,
the server tracks, fits, skins and renders, and the avatar video that comes back moves when the
person moves (and stands still while they stand still)."""

from __future__ import annotations

import asyncio
import time

import numpy as np
from stream_utils import MOTION_S, REST_S, require_shared_video, run, silhouette_change

from streamer.stream.background import ServerThread
from streamer.stream.client import ReceivedFrames, StreamClient, VideoFileTrack
from streamer.stream.server import ServerConfig

CLIP_S = (2.0, 9.0)  # rest until ~4.5 s, then wide arm and leg motion


def test_avatar_follows_the_person_in_the_video(body, demo_avatar) -> None:
    video = require_shared_video()
    config = ServerConfig(host="127.0.0.1", port=0, size=256, fps=20.0, backend="cpu")
    with ServerThread(config, avatar=demo_avatar, body=body) as st:

        def tracked() -> int:
            entry = st.server.stages.get("main")
            return 0 if entry is None else entry.stage.stats.tracked.count

        async def main() -> tuple[list, dict, int]:
            webcam = VideoFileTrack(
                video, max_side=480, start_s=CLIP_S[0], end_s=CLIP_S[1], loop=False, hold=True
            )
            performer = StreamClient(
                st.url, "performer", source=webcam, received=ReceivedFrames(keep_every=1, keep_scale=2)
            )
            viewer = StreamClient(st.url, "viewer")
            await performer.connect(timeout=120)
            await viewer.connect(timeout=120)
            assert performer.joined["source"] == "webcam"
            # the first frame of the clip is sent until tracking runs (MediaPipe starts in a second
            # or two, longer on a busy machine); then the clip plays
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and await asyncio.to_thread(st.call, tracked) < 3:
                await asyncio.sleep(0.2)
            webcam.play()
            # the clip plays in real time and then ends; give a slow machine time to catch up
            deadline = time.monotonic() + 120
            while webcam.readyState == "live" and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            # frames still in the tracker's slot or in MediaPipe are neither tracked nor dropped yet:
            # wait until the counts settle (at most one frame may still be on its way)
            def snapshot() -> dict:
                return st.call(lambda: st.server.stages["main"].stage.snapshot(peers=2))

            deadline = time.monotonic() + 60
            while True:
                stats = await asyncio.to_thread(snapshot)
                pending = stats["frames_in"] - stats["frames_tracked"] - stats["dropped_frames"]
                if pending <= 1 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
            kept = list(performer.received.kept)
            viewer_frames = viewer.received.count
            await performer.close()
            await viewer.close()
            return kept, stats, viewer_frames

        kept, stats, viewer_frames = run(main(), timeout=400)

    assert stats["frames_tracked"] >= 3, stats
    assert viewer_frames > 20
    # Newest frame only: every webcam frame received was either tracked or dropped, none queued.
    assert stats["frames_in"] - stats["frames_tracked"] - stats["dropped_frames"] in (0, 1), stats
    assert stats["latency_ms"]["n"] > 0 and stats["latency_ms"]["p50"] > 0

    # Avatar frames received while the person in the clip was standing still, and while moving.
    # (A frame shows the pose of a webcam frame sent a little earlier: the windows leave margin.)
    rest = [
        k.rgb for k in kept if k.source_time is not None and CLIP_S[0] + 0.5 <= k.source_time <= REST_S[1]
    ]
    moving = [
        k.rgb for k in kept if k.source_time is not None and MOTION_S[0] + 1.0 <= k.source_time <= MOTION_S[1]
    ]
    assert len(rest) >= 3 and len(moving) >= 5, (len(rest), len(moving))
    reference = rest[len(rest) // 2]
    still = max(silhouette_change(reference, f) for f in rest)
    moved = max(silhouette_change(reference, f) for f in moving)
    assert moved > 0.15, f"the avatar hardly moved while the person did (silhouette change {moved:.3f})"
    assert moved > 2.0 * still, f"moving {moved:.3f} vs standing {still:.3f}"
    assert np.mean([silhouette_change(reference, f) for f in moving]) > np.mean(
        [silhouette_change(reference, f) for f in rest]
    )
