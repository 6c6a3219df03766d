"""The tiny model's tokenizer and processor, built offline.

The tokenizer is a byte-level BPE trained here with the `tokenizers` library on generated text
that holds the protocol's strings, with Qwen's pre-tokenizer regex and normaliser and
Qwen2.5-VL's 22 added tokens in Qwen's order, appended after the BPE vocabulary (Qwen puts them
at 151643..151664; here they start at the size of the trained vocabulary, and the config's
`image_token_id`, `vision_start_token_id`, ... point at them). As in Qwen,
`<tool_call>`/`</tool_call>` are added but not special, so decoding with
`skip_special_tokens=True` keeps them. A spec with `time_tokens` appends the clock times
"00:00", "00:01", ... after them, also added and not special (`clock_times`).

Image sizes depart from Qwen2.5-VL's `preprocessor_config.json`, on purpose: frames reach the
processor already at the protocol's sizes, multiples of 28 (`eva_core.resize`), and must not be
resized again. Qwen's `smart_resize` keeps a size whose sides are multiples of 28 when its area
lies in [min_pixels, max_pixels]. Qwen ships min_pixels = 3136 (56 x 56), which would upscale
the smallest protocol frames (28 x 28, 28 x 56); here min_pixels = 784 (28 x 28, one merged
token) and max_pixels = 12845056 (28 x 28 x 16384, Qwen's value), so every frame of 1 to 16384
visual tokens passes unchanged; the protocol's per-call budget (12000 tokens by default,
docs/protocol.md, "Visual-token budget") keeps single frames below that bound.
"""

from __future__ import annotations

import json
import random

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

from eva_core.protocol import FIRST_USER_TURN, SYSTEM_PROMPT, TOOL_RESPONSE_CLOSE
from eva_core.tiny_model.qwen import (
    END_TOKENS,
    QWEN2_5_VL_CHAT_TEMPLATE,
    QWEN_ADDED_TOKENS,
    QWEN_PRETOKENIZE_REGEX,
    RAW_RESPONSE_TEMPLATE,
)
from eva_core.tiny_model.spec import TinyModelSpec

MIN_PIXELS = 28 * 28  # one merged visual token: the smallest protocol frame
MAX_PIXELS = 28 * 28 * 16384  # Qwen2.5-VL's max_pixels

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

    lines = [SYSTEM_PROMPT, TOOL_RESPONSE_CLOSE.split("{question}")[0], "You are a helpful assistant."]
    # The chat roles follow <|im_start|> in every rendered turn.
    lines += [f"{role}\n" for role in ("system", "user", "assistant", "tool")] * 50
    for _ in range(n_lines):
        kind = rng.randrange(6)
        if kind == 0:
            lines.append(FIRST_USER_TURN.format(length=rng.randint(1, 7200), p=rng.choice([240, 360, 480, 720, 1080]),
                                                question=words(rng.randint(4, 14)).capitalize() + "?"))
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


def clock_times(seconds: int) -> list[str]:
    """"mm:ss" for each whole second below `seconds`, as the frame tool labels frames."""
    return [f"{s // 60:02d}:{s % 60:02d}" for s in range(seconds)]


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
    times = clock_times(spec.time_tokens)
    for i, content in enumerate(times, start=base + len(QWEN_ADDED_TOKENS)):
        vocab[content] = i
        added[i] = AddedToken(content, special=False, normalized=False, lstrip=False, rstrip=False, single_word=False)
    special_names = [content for content, special in QWEN_ADDED_TOKENS if special]
    eos, pad = END_TOKENS
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        bos_token=None,
        eos_token=eos,
        pad_token=pad,
        errors="replace",
        added_tokens_decoder=added,
        extra_special_tokens=[t for t in special_names if t not in END_TOKENS],
        model_max_length=32768,
        chat_template=QWEN2_5_VL_CHAT_TEMPLATE,
        response_template=RAW_RESPONSE_TEMPLATE,
    )
    for i, content in enumerate([c for c, _ in QWEN_ADDED_TOKENS] + times):
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
