"""MediaPipe's start-up chatter on stderr is held back; everything else still comes out."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from streamer.tracking.native_log import drop_noise

ABSL_WARNING = (
    b"W0000 00:00:1795289853.900093    8454 inference_feedback_manager.cc:114] Feedback manager requires a "
    b"model with a single signature inference. Disabling support for feedback tensors.\n"
)
ABSL_INFO = b"I0000 00:00:1795289853.900093    8454 gl_context.cc:357] GL version: 2.1\n"
ABSL_ERROR = b"E0000 00:00:1795289853.900093    8454 calculator_graph.cc:887] INTERNAL: the graph failed\n"
TFLITE = b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n"
ABSL_HEADER = b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"


def run_python(code: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, timeout=300)


def test_drop_noise_keeps_errors_and_everything_else() -> None:
    bar = b"\rtrack:  10%|#         | 1/10"
    data = ABSL_HEADER + ABSL_WARNING + b"a line of ours\n" + ABSL_INFO + ABSL_ERROR + bar + TFLITE + b"\n"
    assert drop_noise(data) == b"a line of ours\n" + ABSL_ERROR + bar + b"\n"
    # TF Lite writes its notice in pieces; a progress bar drawn meanwhile lands between them
    assert drop_noise(b"INFO: " + bar + b"Created TensorFlow Lite XNNPACK delegate for CPU.\n") == bar
    assert drop_noise(b"INFO: our own message\n") == b"INFO: our own message\n"


def test_quiet_block_holds_descriptor_2_and_writes_back_all_but_the_noise() -> None:
    proc = run_python(
        f"""
        import os, sys
        from streamer.tracking.native_log import quiet_native_stderr
        os.write(2, b"before\\n")
        with quiet_native_stderr():
            os.write(2, {ABSL_WARNING!r})
            with quiet_native_stderr():  # nested: the outer block holds
                os.write(2, {TFLITE!r})
                print("from python", file=sys.stderr)
            os.write(2, {ABSL_ERROR!r})
        os.write(2, b"after\\n")
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == b"before\nfrom python\n" + ABSL_ERROR + b"after\n"


def test_mediapipe_starts_without_chatter() -> None:
    proc = run_python(
        """
        import time
        import numpy as np
        from streamer.tracking.mediapipe_runner import MediaPipeRunner
        frame = np.full((256, 192, 3), 128, np.uint8)
        with MediaPipeRunner("holistic", video=True) as runner:
            time.sleep(1.0)  # the models load on MediaPipe's threads: their notices must be held too
            for i in range(3):
                runner.process(frame, 33.0 * i)
        with MediaPipeRunner("pose", video=False, segmentation=True) as runner:
            runner.process(frame, 0.0)
        print("ran")
        """
    )
    assert proc.returncode == 0 and proc.stdout.strip() == b"ran", proc.stderr
    assert proc.stderr == b"", proc.stderr.decode(errors="replace")
