"""A tiny, randomly initialised Qwen2.5-VL checkpoint built offline, for tests and the quickstart.

`build_tiny_model(out_dir)` writes a directory that loads exactly like a real Qwen2.5-VL
checkpoint: `AutoProcessor.from_pretrained(dir)` gives a `Qwen2_5_VLProcessor` (a
`Qwen2Tokenizer`, a `Qwen2VLImageProcessor`, a `Qwen2VLVideoProcessor` and Qwen's chat
template) and `AutoModelForImageTextToText.from_pretrained(dir)` gives a
`Qwen2_5_VLForConditionalGeneration`. Nothing is downloaded:

- the model is the real architecture (windowed vision tower, patch merger, M-RoPE decoder),
  only small: every hidden and intermediate size is a multiple of 64 and at least 64, so
  4-bit quantisation (blocks of 64) applies to every linear layer, vision tower included;
- the tokenizer is a byte-level BPE trained here with the `tokenizers` library on generated
  text that holds the protocol's strings, with Qwen's pre-tokenizer regex and normaliser and
  Qwen2.5-VL's 22 added tokens in Qwen's order, appended after the BPE vocabulary (Qwen puts
  them at 151643..151664; here they start at the size of the trained vocabulary, and the
  config's `image_token_id`, `vision_start_token_id`, ... point at them). As in Qwen,
  `<tool_call>`/`</tool_call>` are added but not special, so decoding with
  `skip_special_tokens=True` keeps them;
- the chat template is Qwen2.5-VL's own (`chat_template.json` of Qwen2.5-VL-7B-Instruct,
  copied below verbatim). It has no tool-specific branch: a `tool` turn renders as
  `<|im_start|>tool\\n...<|im_end|>` with its images as
  `<|vision_start|><|image_pad|><|vision_end|>`, which is why the protocol's tool turn carries
  its own `<tool_response>` tags in its text.

Image sizes (departure from Qwen2.5-VL's `preprocessor_config.json`, on purpose): frames reach
the processor already at the protocol's sizes, multiples of 28 (`eva_core.resize`), and must
not be resized again. Qwen's `smart_resize` keeps a size whose sides are multiples of 28 when
its area lies in [min_pixels, max_pixels]. Qwen ships min_pixels = 3136 (56 x 56), which
would upscale the smallest protocol frames (28 x 28, 28 x 56); here min_pixels = 784 (28 x 28,
one merged token) and max_pixels = 12845056 (28 x 28 x 16384, Qwen's value), so every frame of
1 to 16384 visual tokens passes unchanged; the protocol's per-call budget (12000 tokens by
default) keeps single frames below that bound.

Two more departures, both for serving and both harmless in-process: the tokenizer carries a
pass-through `response_template` (`RAW_RESPONSE_TEMPLATE`, so `transformers serve` returns the
raw reply instead of failing on EVA's tool-call JSON), and `generation_config.suppress_tokens`
lists the special tokens other than the two end tokens (random weights would otherwise write
image placeholders that one backend's decode drops and another's keeps).

The weights are random: the model writes gibberish, never a valid tool call. Users never need
this module; a real checkpoint loads through the same `from_pretrained` path.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import (
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    trainers,
)

# Part of the cache key (with a digest of this file): bump it to invalidate every cached copy.
TINY_MODEL_VERSION = "1"

# Qwen2.5-VL's added tokens, in Qwen's order (ids 151643..151664 there), with Qwen's `special`
# flag: tool-call and FIM tokens are not special, so they survive skip_special_tokens.
QWEN_ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
)

# Qwen2's pre-tokenizer split (transformers.models.qwen2.tokenization_qwen2.PRETOKENIZE_REGEX).
QWEN_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# Qwen2.5-VL-7B-Instruct's chat_template.json, verbatim.
QWEN2_5_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# `transformers serve` parses replies with the tokenizer's `response_template`, else with a
# built-in Qwen one that lifts `<tool_call>` blocks into OpenAI `tool_calls`: that one needs a
# `name` key, so EVA's `{"tool": "frame_select", ...}` calls (and any malformed block) end in
# HTTP 500, and it strips the text. This template hands back the whole reply, unstripped, up to
# the end token, so the server returns what the model wrote (vLLM does the same by default).
# To serve a real EVA checkpoint with `transformers serve`, add it to its tokenizer_config.json.
RAW_RESPONSE_TEMPLATE = {
    "defaults": {"role": "assistant"},
    "start_anchor": "<|im_start|>assistant\n",
    "fields": {
        "content": {
            "close_pattern": r"<\|im_end\|>|<\|endoftext\|>",
            "content": "text",
            "content_args": {"strip": False},
        },
    },
}

QK_INIT_STD = 0.2  # decoder query/key weights; see build_tiny_model

MIN_PIXELS = 28 * 28  # one merged visual token: the smallest protocol frame
MAX_PIXELS = 28 * 28 * 16384  # Qwen2.5-VL's max_pixels


@dataclass(frozen=True)
class TinyModelSpec:
    """Sizes of the tiny model. Defaults give about 0.6M parameters and build in about a second.

    Attributes:
        vocab_size: target size of the trained BPE vocabulary plus the 22 added tokens (the
            trainer may stop short on a small corpus; the config uses the real size).
        hidden_size: decoder width; a multiple of 64.
        intermediate_size: decoder MLP width; a multiple of 64.
        num_hidden_layers: decoder layers.
        num_attention_heads: decoder heads; head_dim = hidden_size / heads must be even and
            split into M-RoPE's (temporal, height, width) sections, see `mrope_section`.
        num_key_value_heads: grouped-query KV heads.
        vision_hidden_size: vision tower width; a multiple of 64.
        vision_intermediate_size: vision MLP width; a multiple of 64.
        vision_depth: vision blocks; the last one uses full attention, the others windows.
        vision_heads: vision heads.
        corpus_lines: lines of generated text the tokenizer is trained on.
        extra_text: more text the tokenizer's corpus repeats (for instance the wording of the
            training trajectories), so that its words become single tokens; empty by default.
        qk_init_std: std of the decoder's query/key weights (see `build_tiny_model`); None keeps
            transformers' initialisation (std 0.02), which a model meant to learn needs: sharp
            random attention saturates the softmax, and the gradient through it vanishes.
    """

    vocab_size: int = 1024
    hidden_size: int = 128
    intermediate_size: int = 256
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    vision_hidden_size: int = 64
    vision_intermediate_size: int = 128
    vision_depth: int = 2
    vision_heads: int = 2
    corpus_lines: int = 4000
    extra_text: str = ""
    qk_init_std: float | None = QK_INIT_STD

    def __post_init__(self) -> None:
        for name in ("hidden_size", "intermediate_size", "vision_hidden_size", "vision_intermediate_size"):
            value = getattr(self, name)
            if value < 64 or value % 64:
                raise ValueError(f"{name} must be a multiple of 64 and at least 64, got {value}")
        if self.hidden_size % self.num_attention_heads or (self.hidden_size // self.num_attention_heads) % 8:
            raise ValueError("hidden_size / num_attention_heads must be a multiple of 8 (M-RoPE sections)")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("num_attention_heads must be a multiple of num_key_value_heads")
        if self.vocab_size < 256 + len(QWEN_ADDED_TOKENS) + 1:
            raise ValueError("vocab_size must exceed the 256 byte tokens plus the added tokens")

    @classmethod
    def scaled(cls, hidden_size: int, layers: int) -> TinyModelSpec:
        """A larger variant for benchmarks: MLP 4x wide, one head per 64 channels, half as many KV
        heads (hidden 512 and 4 layers is the benchmarks' 17M-parameter model)."""
        return cls(hidden_size=hidden_size, intermediate_size=4 * hidden_size, num_hidden_layers=layers,
                   num_attention_heads=max(1, hidden_size // 64), num_key_value_heads=max(1, hidden_size // 128))

    @property
    def mrope_section(self) -> list[int]:
        """M-RoPE's split of head_dim / 2 rotary frequencies into (t, h, w): Qwen's 16:24:24 ratio."""
        half = self.hidden_size // self.num_attention_heads // 2
        t = half // 4
        h = (half - t) // 2
        return [t, h, half - t - h]


# The wording of eva-data's oracle trajectories and of the synthetic questions (summary, plan,
# reflection, the scan, colours and shapes): the `learner` tokenizer makes these words whole tokens,
# which halves the length of a trajectory (and so the cost of a step and of a reply).
LEARNER_TEXT = (
    "Summary: I have not seen the video yet. It is 39 seconds long, and the question asks about the colour of a "
    "shape.\nPlan: colour shows even at low resolution, so I will scan the whole video at low resolution (12 frames) "
    "to find the shape.\nSummary: the scan shows a red shape at [00:12]; the rest is grey background with moving "
    "blocks. It is the only coloured shape in the video, so it is the one the question asks about.\nReflection: the "
    "shape is green, which is option B.\n<answer>B</answer> A shape carrying the character 'K' appears briefly in "
    "the video. What colour is it?\nA. red\nB. green\nC. blue\nD. yellow\nE. orange\nF. purple\nAnswer with the "
    "option's letter from the given choices directly. Plan: shapes like this are on screen for a few seconds only, "
    "so I will first scan the whole video at low resolution to find when coloured shapes appear, then look at those "
    "moments at full resolution. circle square triangle diamond letter digit character candidates close looks. At "
    "this resolution no character can be read. I will look at each of these moments at full resolution."
)

_WORD_TEXT = (
    "the a an of to in on at for with from by and or but not is are was were be been this that "
    "these those it its he she they we you video frame frames scene person man woman car dog "
    "cat ball table door room street kitchen screen hand red blue green white black small large "
    "first second third last before after while during then next finally start end middle "
    "opens closes walks runs holds picks puts throws looks turns enters leaves speaks shows "
    "appears happens changes question answer option options correct because so therefore "
    "need more information look closer time range seconds minute clip segment part beginning "
    "summary plan reflect check confirm evidence see seen visible clearly likely count how many "
    "what where when who why which does did do can could should would will"
)
_WORDS = tuple(_WORD_TEXT.split())


def _corpus(n_lines: int, seed: int, extra_text: str = "") -> list[str]:
    """Generated training text: the protocol's fixed strings around random words and numbers."""
    rng = random.Random(seed)

    def words(k: int) -> str:
        return " ".join(rng.choice(_WORDS) for _ in range(k))

    lines = [
        "Use Frame Select Tool to Anlysis the video and generate an answer to the question.",
        "\nIf more information is needed, call the frame selection tool again.\n\nQuestion: ",
        "You are a helpful assistant.",
    ]
    # The chat roles follow <|im_start|> in every rendered turn.
    lines += [f"{role}\n" for role in ("system", "user", "assistant", "tool")] * 50
    for _ in range(n_lines):
        kind = rng.randrange(6)
        if kind == 0:
            lines.append(
                f"Video Length: {rng.randint(1, 7200)} seconds. Original video resolution: "
                f"{rng.choice([240, 360, 480, 720, 1080])}p. {words(rng.randint(4, 14)).capitalize()}?"
            )
        elif kind == 1:
            start = round(rng.uniform(0, 600), 1)
            args = {"start_time": start, "end_time": round(start + rng.uniform(1, 300), 1),
                    "nframes": rng.randint(1, 32), "resize": rng.choice([0.25, 0.5, 1.0])}
            key = rng.choice(["arguments", "parameters"])
            lines.append(f'<tool_call>{{"tool": "frame_select", "{key}": {json.dumps(args)}}}</tool_call>')
        elif kind == 2:
            i, sec = rng.randint(0, 31), rng.randint(0, 3599)
            lines.append(f"<tool_response>Frame {i} at [{sec // 60:02d}:{sec % 60:02d}]: ")
        elif kind == 3:
            letter = rng.choice("ABCD")
            lines.append(f"{words(rng.randint(5, 20)).capitalize()}. <answer>{letter}</answer>")
        elif kind == 4:
            opts = " ".join(f"{c}. {words(rng.randint(1, 4))}" for c in "ABCD")
            lines.append(f"{words(rng.randint(4, 10)).capitalize()}? Options: {opts}</tool_response>")
        else:
            lines.append(words(rng.randint(8, 30)).capitalize() + ".")
    if extra_text:
        lines += [extra_text] * max(1, n_lines // 20)
    return lines


def _train_bpe(spec: TinyModelSpec, seed: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Train a byte-level BPE with Qwen2's normaliser and pre-tokenizer; returns vocab and merges."""
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size - len(QWEN_ADDED_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
        special_tokens=[],
    )
    tok.train_from_iterator(_corpus(spec.corpus_lines, seed, spec.extra_text), trainer=trainer)
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    return dict(model["vocab"]), merges


def build_tokenizer(spec: TinyModelSpec | None = None, *, seed: int = 0):
    """A `Qwen2Tokenizer` over a BPE trained here, with Qwen2.5-VL's added tokens after its vocab.

    Returns:
        transformers.Qwen2Tokenizer with eos `<|im_end|>` and pad `<|endoftext|>`, as Qwen2.5-VL.
    """
    from transformers import Qwen2Tokenizer

    spec = spec or TinyModelSpec()
    vocab, merges = _train_bpe(spec, seed)
    base = len(vocab)
    added = {}
    for i, (content, special) in enumerate(QWEN_ADDED_TOKENS):
        vocab[content] = base + i
        added[base + i] = AddedToken(content, special=special, normalized=False, lstrip=False, rstrip=False,
                                     single_word=False)
    special_names = [content for content, special in QWEN_ADDED_TOKENS if special]
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        errors="replace",
        added_tokens_decoder=added,
        extra_special_tokens=[t for t in special_names if t not in ("<|im_end|>", "<|endoftext|>")],
        model_max_length=32768,
        chat_template=QWEN2_5_VL_CHAT_TEMPLATE,
        response_template=RAW_RESPONSE_TEMPLATE,
    )
    for i, (content, _) in enumerate(QWEN_ADDED_TOKENS):
        got = tokenizer.convert_tokens_to_ids(content)
        if got != base + i:  # a transformers change in how added tokens are placed would break the config
            raise RuntimeError(f"added token {content!r} got id {got}, expected {base + i}")
    return tokenizer


def build_processor(spec: TinyModelSpec | None = None, *, seed: int = 0):
    """Qwen2.5-VL's processor over the tiny tokenizer; image sizes pass unchanged (see module doc)."""
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    tokenizer = build_tokenizer(spec, seed=seed)
    image_processor = Qwen2VLImageProcessor(
        min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS, patch_size=14, temporal_patch_size=2, merge_size=2,
    )
    video_processor = Qwen2VLVideoProcessor(
        min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS, patch_size=14, temporal_patch_size=2, merge_size=2,
    )
    return Qwen2_5_VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=QWEN2_5_VL_CHAT_TEMPLATE,
    )


def build_config(tokenizer, spec: TinyModelSpec | None = None):
    """A `Qwen2_5_VLConfig` of the real architecture at the tiny sizes, token ids from `tokenizer`."""
    from transformers import Qwen2_5_VLConfig

    spec = spec or TinyModelSpec()
    ids = {content: tokenizer.convert_tokens_to_ids(content) for content, _ in QWEN_ADDED_TOKENS}
    text_config = {
        "vocab_size": len(tokenizer),
        "hidden_size": spec.hidden_size,
        "intermediate_size": spec.intermediate_size,
        "num_hidden_layers": spec.num_hidden_layers,
        "num_attention_heads": spec.num_attention_heads,
        "num_key_value_heads": spec.num_key_value_heads,
        "hidden_act": "silu",
        "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-6,
        "use_sliding_window": False,
        "max_window_layers": spec.num_hidden_layers,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": spec.mrope_section},
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
    }
    vision_config = {
        "depth": spec.vision_depth,
        "hidden_size": spec.vision_hidden_size,
        "intermediate_size": spec.vision_intermediate_size,
        "num_heads": spec.vision_heads,
        "hidden_act": "silu",
        "in_channels": 3,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "tokens_per_second": 2,
        "window_size": 112,
        "out_hidden_size": spec.hidden_size,
        "fullatt_block_indexes": [spec.vision_depth - 1],
    }
    return Qwen2_5_VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )


def build_tiny_model(out_dir: str | os.PathLike, *, seed: int = 0, spec: TinyModelSpec | None = None) -> Path:
    """Build the tiny Qwen2.5-VL checkpoint into `out_dir` (created; existing files overwritten).

    Args:
        out_dir: destination folder.
        seed: seeds both the tokenizer's training text and the weights; the same seed gives
            the same files.
        spec: sizes; `TinyModelSpec()` by default.

    Returns:
        The folder, loadable with `AutoProcessor.from_pretrained` and
        `AutoModelForImageTextToText.from_pretrained`.
    """
    from transformers import GenerationConfig, Qwen2_5_VLForConditionalGeneration

    spec = spec or TinyModelSpec()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    processor = build_processor(spec, seed=seed)
    tokenizer = processor.tokenizer
    config = build_config(tokenizer, spec)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2_5_VLForConditionalGeneration(config).eval()
        # At the default init (std 0.02) random attention is nearly uniform, so replies would not
        # depend on token positions and a test of M-RoPE position handling could not fail
        # (measured: positions replaced by token indices gave the same greedy reply). Sharper
        # query/key projections make attention, and so the replies, depend on positions.
        with torch.no_grad():
            for layer in model.model.language_model.layers if spec.qk_init_std is not None else ():
                for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj):
                    proj.weight.normal_(0.0, spec.qk_init_std)
    end_ids = [tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")]
    # Random weights would write image placeholders and other chat markers that a trained model
    # never writes; a skip_special_tokens decode drops them but a server's raw decode keeps them,
    # so two backends would return different text. Suppress every special token but the ends.
    suppress = [tokenizer.convert_tokens_to_ids(t) for t, special in QWEN_ADDED_TOKENS
                if special and t not in ("<|im_end|>", "<|endoftext|>")]
    # Greedy by default (the protocol decodes greedily); eos as Qwen2.5-VL: <|im_end|>, <|endoftext|>.
    model.generation_config = GenerationConfig(
        bos_token_id=end_ids[1], eos_token_id=end_ids, pad_token_id=end_ids[1], do_sample=False,
        suppress_tokens=suppress,
    )
    model.save_pretrained(out)
    processor.save_pretrained(out)
    (out / "README.md").write_text(
        "# tiny Qwen2.5-VL (random weights)\n\n"
        f"Built offline by `eva_core.tiny_model.build_tiny_model(seed={seed})`, version {TINY_MODEL_VERSION}.\n"
        "Real architecture, random weights, a BPE tokenizer trained locally: for tests only.\n"
    )
    return out


SPECS: dict[str, TinyModelSpec] = {
    "tiny": TinyModelSpec(),
    # The quickstart's model (docs/train.md, "The embedded default"): wide and deep enough to learn
    # the protocol's format and a colour from the frames in minutes on 2 CPU cores; about 4.6M
    # parameters, with a tokenizer that knows the trajectories' words.
    "learner": TinyModelSpec(vocab_size=2048, hidden_size=256, intermediate_size=512, num_hidden_layers=4,
                             num_attention_heads=4, num_key_value_heads=2, vision_hidden_size=128,
                             vision_intermediate_size=256, vision_depth=2, vision_heads=2, extra_text=LEARNER_TEXT,
                             qk_init_std=None),
}
"""Named sizes: `tiny` (tests, the default) and `learner` (the quickstart's recipe)."""


def default_cache_root() -> Path:
    """`$EVA_CACHE_DIR`, else `$XDG_CACHE_HOME/eva`, else `~/.cache/eva`."""
    if env := os.environ.get("EVA_CACHE_DIR"):
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "eva"


def tiny_model_dir(*, seed: int = 0, spec: str = "tiny", cache_root: str | os.PathLike | None = None) -> Path:
    """The tiny model's folder in the cache, built on first use (`spec` names a size in `SPECS`).

    The folder is keyed by the seed and a digest of this module's source and the transformers
    version, so an edit here or a transformers upgrade never serves a stale checkpoint. Building
    goes to a temporary
    sibling that is renamed into place, so concurrent processes never see a half-written
    checkpoint (the loser of a race discards its copy).

    Returns:
        `<cache_root>/tiny-qwen2_5_vl-v{TINY_MODEL_VERSION}-{digest}-seed{seed}` (with `-{spec}`
        added for sizes other than `tiny`).
    """
    import transformers

    if spec not in SPECS:
        raise ValueError(f"unknown tiny model size {spec!r}; known: {sorted(SPECS)}")
    root = Path(cache_root) if cache_root is not None else default_cache_root()
    digest = hashlib.sha256(Path(__file__).read_bytes() + transformers.__version__.encode()).hexdigest()[:12]
    final = root / (f"tiny-qwen2_5_vl-v{TINY_MODEL_VERSION}-{digest}-seed{seed}" + ("" if spec == "tiny" else f"-{spec}"))
    if (final / "config.json").is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=final.name + ".", dir=root))
    try:
        build_tiny_model(tmp, seed=seed, spec=SPECS[spec])
        try:
            tmp.rename(final)
        except OSError:  # another process finished first
            if not (final / "config.json").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final
