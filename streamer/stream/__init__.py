"""Streaming: the avatar server (HTTP + websockets signalling + aiortc) and its Python client.

Modules, in the order a frame flows through them:

* :mod:`.protocol` - signalling and data-channel messages (parsing and validation, no I/O).
* :mod:`.latest` - newest-item-only hand-over between threads and to asyncio.
* :mod:`.pose_source` - the pose of a stage: webcam tracking and fitting in worker threads, or a motion file.
* :mod:`.painter` - pose -> skinned Gaussians -> picture from a (viewer's) camera, no I/O.
* :mod:`.stage` - one avatar + one pose source + views, and its paced render worker.
* :mod:`.camera_encoder` - one encode per camera, codec (VP8, H.264) and bit rate, shared by the
  peers watching through it.
* :mod:`.bitrate` - each peer's rate, from its bandwidth estimate (REMB) and loss reports.
* :mod:`.tracks` - aiortc tracks: the avatar video per peer, draining a peer's webcam.
* :mod:`.stats` - rolling timings, rates, latency percentiles.
* :mod:`.tasks` - background asyncio tasks that log their failures.
* :mod:`.session`, :mod:`.server`, :mod:`.http`, :mod:`.ice` - the server itself.
* :mod:`.client`, :mod:`.encoded_clip`, :mod:`.background` - a Python client, a pre-encoded webcam
  clip and a server thread (bench, tests).

Threads: the asyncio loop does networking only; per stage one tracking worker (MediaPipe), one fit
worker (SMPL-X fit of each tracked frame, overlapping the tracking of the next) and one render
worker (LBS + render at the output rate); each camera's pictures are encoded once per codec and rate,
by the first peer's track to ask, in aiortc's executor; aiortc only packetizes and sends per peer.
"""

from .server import AvatarServer, ServerConfig, run_server

__all__ = ["AvatarServer", "ServerConfig", "run_server"]
