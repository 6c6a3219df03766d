"""The distractor background: greyish content that keeps changing, so that most of a video is
something to look at and nothing to answer from.

A video is a run of scenes of 15-60 s. Each scene has a two-colour gradient of low saturation
overlaid with a soft diagonal texture, panning slowly back and forth, and a few grey blocks that
move and bounce off the frame's edges. Nothing in it is saturated, so the coloured event shapes
stay findable at low resolution; what needs full resolution is the glyph they carry.

Cost is what matters here (a 30-minute video has 3,600 frames at 2 fps): each scene's gradient
is drawn once, wider than the frame, and a frame is a slice of it plus a few block fills.
"""

from __future__ import annotations

import colorsys
import random
from dataclasses import dataclass

import numpy as np

SCENE_SECONDS = (15.0, 60.0)
FLAT_GREY = 128  # the flat background's level
CUE_WHITE = 255  # the flat background's level inside a cue window (`SynthConfig.cue_windows`)
PAN_PIXELS = 160  # the gradient is this much wider than the frame; a scene pans across it


@dataclass(frozen=True)
class Block:
    """A grey rectangle moving at constant speed and bouncing off the edges.

    Attributes:
        w, h: size in pixels.
        grey: its level, 0-255.
        x0, y0: position at the scene's first frame.
        vx, vy: pixels per frame.
    """

    w: int
    h: int
    grey: int
    x0: float
    y0: float
    vx: float
    vy: float


@dataclass(frozen=True)
class Scene:
    """One stretch of background.

    Attributes:
        first_frame: index of the scene's first frame in the video.
        colours: the gradient's two RGB ends.
        texture_period: pixels per cycle of the diagonal texture.
        pan_speed: pixels per frame.
        blocks: the moving grey rectangles.
    """

    first_frame: int
    colours: tuple[tuple[int, int, int], tuple[int, int, int]]
    texture_period: float
    pan_speed: float
    blocks: tuple[Block, ...]


def _muted(rng: random.Random) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.08, 0.25), rng.uniform(0.3, 0.75))
    return (round(r * 255), round(g * 255), round(b * 255))


def plan_scenes(scene_seed: int, n_frames: int, fps: float, width: int, height: int) -> list[Scene]:
    """The scenes of a video, drawn from `scene_seed`."""
    rng = random.Random(scene_seed)
    scenes, frame = [], 0
    while frame < n_frames:
        blocks = tuple(
            Block(w=rng.randint(20, width // 5), h=rng.randint(20, height // 4), grey=rng.randint(60, 200),
                  x0=rng.uniform(0, width), y0=rng.uniform(0, height),
                  vx=rng.uniform(-24, 24) / fps, vy=rng.uniform(-16, 16) / fps)
            for _ in range(rng.randint(3, 6))
        )
        scenes.append(Scene(first_frame=frame, colours=(_muted(rng), _muted(rng)),
                            texture_period=rng.uniform(40, 160), pan_speed=rng.uniform(4, 16) / fps,
                            blocks=blocks))
        frame += max(1, round(rng.uniform(*SCENE_SECONDS) * fps))
    return scenes


def _bounce(position: float, span: int) -> int:
    """A coordinate moving freely, folded back into [0, span] (a triangle wave)."""
    if span <= 0:
        return 0
    p = position % (2 * span)
    return int(p if p <= span else 2 * span - p)


def _gradient(scene: Scene, width: int, height: int) -> np.ndarray:
    """uint8 [H, W + PAN_PIXELS, 3]: the scene's gradient with its texture."""
    full = width + PAN_PIXELS
    x = np.arange(full, dtype=np.float32)[None, :]
    y = np.arange(height, dtype=np.float32)[:, None]
    mix = (x / full * 0.7 + y / height * 0.3)[..., None]
    a, b = (np.array(c, np.float32) for c in scene.colours)
    texture = 18.0 * np.sin(2 * np.pi * (x + y) / scene.texture_period)[..., None]
    img = a * (1 - mix) + b * mix + texture
    return np.clip(img, 0, 255).astype(np.uint8)


class SceneRenderer:
    """Background frames of one video, in order.

    Args:
        scene_seed, n_frames, fps, width, height: as in the video's plan.
        grain: amplitude of per-frame uniform noise added to every pixel (0 for none).
        flat: a flat mid-grey instead of the tinted gradients (the moving grey blocks stay).
        cue_frames: [first, stop) frame indices whose flat background is `CUE_WHITE` (needs `flat`).
    """

    def __init__(self, scene_seed: int, n_frames: int, fps: float, width: int, height: int, grain: int = 0,
                 flat: bool = False, cue_frames: tuple[int, int] | None = None):
        if cue_frames is not None and not flat:
            raise ValueError("a cue is drawn on the flat background only")
        self.scenes = plan_scenes(scene_seed, n_frames, fps, width, height)
        self.width, self.height, self.grain, self.flat = width, height, grain, flat
        self.cue_frames = cue_frames
        self._noise = np.random.Generator(np.random.PCG64(scene_seed))
        self._current: int | None = None
        self._cued = False
        self._gradient: np.ndarray | None = None

    def frame(self, index: int) -> np.ndarray:
        """uint8 [H, W, 3]: background frame `index`.

        With `grain` > 0 the noise is drawn as the video goes, so the same pixels need the
        frames asked for in the same order (the renderer asks for 0, 1, 2, ...).
        """
        which = self._scene_index(index)
        scene = self.scenes[which]
        cued = self.cue_frames is not None and self.cue_frames[0] <= index < self.cue_frames[1]
        if (which, cued) != (self._current, self._cued):
            self._current, self._cued = which, cued
            self._gradient = (np.full((self.height, self.width + PAN_PIXELS, 3), CUE_WHITE if cued else FLAT_GREY,
                                      np.uint8) if self.flat else _gradient(scene, self.width, self.height))
        local = index - scene.first_frame
        offset = _bounce(local * scene.pan_speed, PAN_PIXELS)
        img = self._gradient[:, offset:offset + self.width].copy()
        for block in scene.blocks:
            x = _bounce(block.x0 + block.vx * local, self.width - block.w)
            y = _bounce(block.y0 + block.vy * local, self.height - block.h)
            img[y:y + block.h, x:x + block.w] = block.grey
        if self.grain:
            noise = self._noise.integers(-self.grain, self.grain + 1, size=img.shape, dtype=np.int16)
            img = np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8)
        return img

    def _scene_index(self, index: int) -> int:
        """The scene holding frame `index`, searched forward from the current one."""
        i = self._current if self._current is not None and self.scenes[self._current].first_frame <= index else 0
        while i + 1 < len(self.scenes) and self.scenes[i + 1].first_frame <= index:
            i += 1
        return i
