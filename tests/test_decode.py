"""extract.decode on real inputs: every fixture of ../shared/data, lossless round trips,
broken files, rotation, full range and 10-bit colour against independent references."""
import csv
import subprocess

import cv2
import imageio_ffmpeg
import numpy as np
import pytest

from conftest import shared_data, write_video
from data.errors import InputError, VideoError
from extract.decode import DecodedVideo, VideoMeta, decode, ffmpeg_version, grayscale, probe


def _manifest():
    path = shared_data("fixtures", "MANIFEST.csv")
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _fixture(name):
    return shared_data("fixtures", name)


def _raw(path, *args, pix_fmt="rgb24", dtype=np.uint8, out_args=()):
    """Frames straight from the ffmpeg binary (no scaling) as a flat array."""
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", *args, "-i", str(path),
           "-map", "0:V:0", *out_args, "-f", "rawvideo", "-pix_fmt", pix_fmt, "-"]
    return np.frombuffer(subprocess.run(cmd, capture_output=True, check=True).stdout, dtype)


def _opencv_frames(path):
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(bgr[..., ::-1])
    cap.release()
    return np.stack(frames)


# ------------------------------------------------------------------ real fixtures


def test_every_fixture_decodes_to_its_real_frame_count():
    rows = _manifest()
    assert len(rows) >= 14
    for row in rows:
        video = decode(_fixture(row["file"]))
        assert isinstance(video, DecodedVideo)
        assert video.frames.shape == (int(row["decoded_frames"]), 256, 340, 3), row["file"]
        assert video.frames.dtype == np.uint8 and video.frames.flags.c_contiguous
        assert video.meta.codec == row["codec"], row["file"]
        assert video.meta.pix_fmt == row["pix_fmt"], row["file"]
        assert (video.meta.width, video.meta.height) == (int(row["width"]), int(row["height"]))
        assert video.fps == pytest.approx(float(row["fps"]), rel=1e-3)
        assert video.frames.mean() > 5, f"{row['file']} decoded to black"


def test_probe_agrees_with_decode_and_reads_the_header():
    meta = probe(_fixture("tree.avi"))
    assert meta == decode(_fixture("tree.avi"), max_frames=2).meta
    # the container claims 29.6 s (444 frames at 15 fps); only 68 frames decode
    assert meta.declared_duration == pytest.approx(29.6)
    assert meta.declared_frames == 444
    assert decode(_fixture("tree.avi")).num_frames == 68


def test_first_video_stream_of_a_six_stream_file():
    video = decode(_fixture("nasa_13013.mp4"), size=(320, 180))
    assert (video.meta.width, video.meta.height, video.meta.fps) == (320, 180, 25.0)
    assert video.num_frames == 325
    assert video.warnings == []


def test_corrupt_nal_units_decode_with_warnings():
    video = decode(_fixture("corrupted.mp4"))
    assert video.num_frames == 49
    assert any("Invalid NAL unit size" in w for w in video.warnings)
    assert all(w.split(":")[0] in ("error", "warning", "fatal") for w in video.warnings)


def test_rotation_is_applied_clockwise_from_the_display_matrix():
    path = _fixture("video_90.mov")
    meta = probe(path)
    assert (meta.width, meta.height, meta.rotation) == (568, 320, 90)
    coded = _raw(path, "-noautorotate").reshape(-1, 320, 568, 3)
    upright = np.stack([np.rot90(f, -1) for f in coded])  # (N, 568, 320, 3)
    native = decode(path, size=(320, 568)).frames
    np.testing.assert_array_equal(native, upright)
    # stored size: the upright content is resized to 340x256 like any other video
    stored = decode(path).frames.astype(np.float32)
    ref = np.stack([cv2.resize(np.ascontiguousarray(f), (340, 256), interpolation=cv2.INTER_AREA)
                    for f in upright]).astype(np.float32)
    wrong = np.stack([cv2.resize(np.ascontiguousarray(np.rot90(f, 1)), (340, 256),
                                 interpolation=cv2.INTER_AREA) for f in coded])
    assert np.abs(stored - ref).mean() < 4
    assert np.abs(stored - wrong).mean() > 20
    assert probe(_fixture("video_0.mov")).rotation == 0


@pytest.mark.parametrize("name", ["bt709_full_range.mp4", "h264_10bits.mp4", "carphone_distorted.mp4"])
def test_mean_colour_agrees_with_opencv(name):
    path = _fixture(name)
    ref = _opencv_frames(path)
    ours = decode(path, size=(ref.shape[2], ref.shape[1])).frames
    assert ours.shape == ref.shape
    diff = ours.reshape(-1, 3).mean(0) - ref.reshape(-1, 3).mean(0)
    assert np.abs(diff).max() < 2.0, diff


@pytest.mark.parametrize("name,w,h,pix_fmt,expected_gain", [
    ("bt709_full_range.mp4", 1280, 720, "yuvj420p", 1.0),     # full range: Y is already 0..255
    ("carphone_distorted.mp4", 176, 144, "yuv420p", 255 / 219),  # limited: expanded once
])
def test_full_range_is_not_expanded_twice(name, w, h, pix_fmt, expected_gain):
    path = _fixture(name)
    y = _raw(path, pix_fmt=pix_fmt).reshape(-1, w * h * 3 // 2)[:3, : w * h].astype(np.float64)
    rgb = decode(path, size=(w, h), max_frames=3).frames.astype(np.float64)
    luma = rgb.reshape(3, -1, 3) @ np.array([0.2126, 0.7152, 0.0722])
    gain = np.polyfit(y.ravel()[::7], luma.ravel()[::7], 1)[0]  # least squares on a subsample
    assert gain == pytest.approx(expected_gain, abs=0.02)


def test_ten_bit_matches_a_bt601_limited_range_reference():
    path = _fixture("h264_10bits.mp4")
    yuv = _raw(path, pix_fmt="yuv444p16le", dtype=np.uint16).reshape(-1, 3, 200, 200) / 256.0
    y, u, v = (yuv[:, 0] - 16) * 255 / 219, (yuv[:, 1] - 128) * 255 / 224, (yuv[:, 2] - 128) * 255 / 224
    r, b = y + 1.402 * v, y + 1.772 * u
    g = (y - 0.299 * r - 0.114 * b) / 0.587
    ref = np.clip(np.stack([r, g, b], -1), 0, 255)
    ours = decode(path, size=(200, 200)).frames
    assert np.abs(ours - ref).mean() < 4


def test_max_frames_stops_and_warns():
    video = decode(_fixture("one-by-one-person-detection.mp4"), max_frames=20)
    assert video.frames.shape == (20, 256, 340, 3)
    assert any("max_frames=20" in w for w in video.warnings)
    exact = decode(_fixture("unordered.mov"), max_frames=4)
    assert exact.num_frames == 4 and exact.warnings == []


# ------------------------------------------------------------------ generated inputs


def _texture(n, h, w, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("codec,suffix", [("libx264rgb", ".mp4"), ("ffv1", ".mkv")])
def test_lossless_round_trip(tmp_path, codec, suffix):
    frames = _texture(7, 48, 64)
    path = write_video(tmp_path / f"clip{suffix}", frames, fps=12.0, codec=codec)
    video = decode(path, size=(64, 48))
    np.testing.assert_array_equal(video.frames, frames)
    assert video.fps == pytest.approx(12.0)
    assert video.meta.rotation == 0


def test_long_video_grows_the_buffer(tmp_path):
    frames = np.repeat(_texture(1, 256, 340), 300, axis=0)
    frames[:, 0, 0, 0] = np.arange(300) % 256  # a per-frame marker survives lossless coding
    path = write_video(tmp_path / "long.mp4", frames, fps=30.0)
    video = decode(path)  # 300 frames > the first 32-frame block: the array is grown in place
    assert video.num_frames == 300
    np.testing.assert_array_equal(video.frames[:, 0, 0, 0], frames[:, 0, 0, 0])


def test_variable_frame_rate_keeps_every_frame(tmp_path):
    frames = _texture(6, 32, 32)
    vfr = tmp_path / "vfr.mkv"  # timestamps 0, .1, .2, .9, 1.0, 1.1 s: a 0.7 s gap
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", "rawvideo",
                    "-pix_fmt", "rgb24", "-s", "32x32", "-r", "10", "-i", "-",
                    "-vf", "setpts=(N/10+gte(N\\,3)*0.6)/TB", "-fps_mode", "passthrough",
                    "-c:v", "ffv1", str(vfr)], input=frames.tobytes(), check=True, capture_output=True)
    # ffmpeg's default (and any constant-rate output) fills the gap with copies
    assert _raw(vfr).size // (32 * 32 * 3) == 12
    assert _raw(vfr, out_args=("-fps_mode", "cfr", "-r", "10")).size // (32 * 32 * 3) == 12
    video = decode(vfr, size=(32, 32))
    np.testing.assert_array_equal(video.frames, frames)


def test_broken_inputs_raise_video_error(tmp_path):
    with pytest.raises(VideoError, match="file not found"):
        decode(tmp_path / "missing.mp4")
    text = tmp_path / "notes.mp4"
    text.write_text("this is a text file, not a video\n")
    with pytest.raises(VideoError, match=r"notes\.mp4: ffmpeg exited \d+: .*Invalid data"):
        decode(text)
    with pytest.raises(VideoError, match="empty file"):
        decode(tmp_path.joinpath("empty.mp4").touch() or tmp_path / "empty.mp4")
    with pytest.raises(VideoError, match="not a regular file"):
        probe(tmp_path)


def test_truncated_copy_of_a_real_file_fails(tmp_path):
    data = _fixture("bt709_full_range.mp4").read_bytes()  # index (moov) at the end
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoError, match=r"cut\.mp4: ffmpeg exited \d+: .*moov atom not found"):
        decode(cut)
    mkv = _fixture("flipping_a_pancake.mkv").read_bytes()
    head = tmp_path / "head.mkv"  # header intact, no complete frame
    head.write_bytes(mkv[:2000])
    with pytest.raises(VideoError, match=r"head\.mkv: ffmpeg exited \d+: .*File ended prematurely"):
        decode(head)
    # header and 12 frames intact: what is there decodes, and the truncation is a warning
    part = tmp_path / "part.mkv"
    part.write_bytes(mkv[:30000])
    video = decode(part)
    assert video.num_frames == 12
    assert any("File ended prematurely" in w for w in video.warnings)


def test_file_without_video_stream(tmp_path):
    audio = tmp_path / "tone.m4a"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i",
                    "sine=d=0.5", str(audio)], check=True, capture_output=True)
    for fn in (probe, decode):
        with pytest.raises(VideoError, match=r"tone\.m4a: no video stream \(streams: Audio\)"):
            fn(audio)


def test_bad_arguments_raise_input_error(tmp_path):
    with pytest.raises(InputError):
        decode(tmp_path / "x.mp4", size=(0, 10))
    with pytest.raises(InputError):
        decode(tmp_path / "x.mp4", size="340x256")
    with pytest.raises(InputError):
        decode(tmp_path / "x.mp4", max_frames=0)


# ------------------------------------------------------------------ helpers


def test_grayscale_is_bt601_luma():
    frames = _texture(3, 5, 7)
    gray = grayscale(frames)
    assert gray.shape == (3, 5, 7) and gray.dtype == np.uint8
    ref = frames.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    assert np.abs(gray - ref).max() <= 1
    assert grayscale(frames[:0]).shape == (0, 5, 7)
    with pytest.raises(InputError):
        grayscale(frames[..., 0])


def test_ffmpeg_version_and_meta_type():
    assert ffmpeg_version()[0].isalnum() and " " not in ffmpeg_version()
    assert isinstance(probe(_fixture("h265_video.mp4")), VideoMeta)
