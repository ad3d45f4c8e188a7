"""extract.decode's two decoders: the ffmpeg binary and OpenCV's bundled FFmpeg (the GPU
machine's fallback, issue 31), on real encoded video; the choice and its errors."""
import numpy as np
import pytest

from conftest import shared_data, write_video
from data.errors import InputError, VideoError
from extract import decode as dec


@pytest.fixture
def use(monkeypatch):
    def set_decoder(name):
        monkeypatch.setenv("FRAMESEL_DECODER", name)
    return set_decoder


def _clip(tmp_path):
    """A lossless 40x30 clip of 7 smooth moving frames (libx264rgb: RGB stored exactly)."""
    y, x = np.mgrid[0:30, 0:40]
    frames = np.stack([np.stack([(4 * x + 3 * t) % 256, (6 * y + 5 * t) % 256, (2 * x + 2 * y) % 256], -1)
                       for t in range(7)]).astype(np.uint8)
    return write_video(tmp_path / "c.mp4", frames), frames


def test_opencv_decoder_gives_the_same_frames_as_ffmpeg(tmp_path, use):
    path, frames = _clip(tmp_path)
    use("ffmpeg")
    ref = dec.decode(path, (40, 30))
    use("opencv")
    ours = dec.decode(path, (40, 30))
    assert ours.frames.shape == ref.frames.shape == frames.shape and ours.frames.dtype == np.uint8
    assert ours.fps == pytest.approx(ref.fps) == pytest.approx(25.0)
    diff = np.abs(ours.frames.astype(int) - ref.frames.astype(int))
    assert diff.mean() < 2.0, diff.mean()        # both RGB of the same lossless stream
    assert dec.ffmpeg_version().startswith("opencv-")
    meta = dec.probe(path)
    assert (meta.width, meta.height, meta.rotation) == (40, 30, 0)
    cut = dec.decode(path, (20, 16), max_frames=3)
    assert cut.frames.shape == (3, 16, 20, 3) and "max_frames=3" in cut.warnings[0]


def test_opencv_decoder_on_a_real_clip_resized(use):
    """A fight clip (H.264 yuv420p) at TSN's 340x256: same frames count, near pixels (the
    resizers differ: swscale area inside ffmpeg vs OpenCV's INTER_AREA after decoding)."""
    path = shared_data("fight", "videos", "fight", "fi005.mp4")
    use("ffmpeg")
    ref = dec.decode(path)
    use("opencv")
    ours = dec.decode(path)
    assert ours.frames.shape == ref.frames.shape
    diff = np.abs(ours.frames.astype(int) - ref.frames.astype(int))
    print(f"opencv vs ffmpeg decoder on {path.name}: mean |diff| {diff.mean():.2f}, max {diff.max()}")
    assert diff.mean() < 4.0


def test_opencv_decoder_errors_name_the_file(tmp_path, use):
    use("opencv")
    with pytest.raises(VideoError, match="file not found"):
        dec.decode(tmp_path / "nope.mp4")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all")
    with pytest.raises(VideoError, match="bad.mp4"):
        dec.decode(bad)


def test_choice(monkeypatch, use):
    use("quicktime")
    with pytest.raises(InputError, match="FRAMESEL_DECODER"):
        dec.decoder()
    use("")
    assert dec.decoder() == "ffmpeg"                 # this machine has imageio-ffmpeg's binary
    monkeypatch.setattr(dec, "_find_ffmpeg", lambda: None)
    assert dec.decoder() == "opencv"                 # a machine without one
    use("ffmpeg")
    with pytest.raises(InputError, match="FRAMESEL_DECODER=opencv"):
        dec.decoder()
