"""A tiny, randomly initialised Qwen2.5-VL checkpoint built offline, for tests and the quickstart.

`build_tiny_model(out_dir)` writes a folder that loads exactly like a real Qwen2.5-VL
checkpoint: `AutoProcessor.from_pretrained(dir)` gives a `Qwen2_5_VLProcessor` (a
`Qwen2Tokenizer`, a `Qwen2VLImageProcessor`, a `Qwen2VLVideoProcessor` and Qwen's chat template)
and `AutoModelForImageTextToText.from_pretrained(dir)` gives a
`Qwen2_5_VLForConditionalGeneration`, the real architecture (windowed vision tower, patch merger,
M-RoPE decoder) at small sizes. Nothing is downloaded. `tiny_model_dir()` is the cached copy
most callers want.

The modules, in import order:

    qwen.py       what is copied from Qwen2.5-VL: added tokens, pre-tokenizer, chat template
    spec.py       the sizes (`TinyModelSpec`) and the named ones (`SPECS`: tiny, learner, planner)
    processor.py  the BPE tokenizer trained here, and the processor that keeps frame sizes
    build.py      config, seeded weights, generation config, `save_pretrained`
    cache.py      the cached folder, keyed by seed, size and a digest of this package

The weights are random: the model writes gibberish, never a valid tool call. Users never need
this package; a real checkpoint loads through the same `from_pretrained` path.
"""

from eva_core.tiny_model.build import TINY_MODEL_VERSION, build_config, build_tiny_model
from eva_core.tiny_model.cache import default_cache_root, source_digest, tiny_model_dir
from eva_core.tiny_model.processor import MAX_PIXELS, MIN_PIXELS, build_processor, build_tokenizer
from eva_core.tiny_model.qwen import (
    END_TOKENS,
    QWEN2_5_VL_CHAT_TEMPLATE,
    QWEN_ADDED_TOKENS,
    QWEN_PRETOKENIZE_REGEX,
    RAW_RESPONSE_TEMPLATE,
)
from eva_core.tiny_model.spec import LEARNER_TEXT, QK_INIT_STD, SPECS, TinyModelSpec

__all__ = [
    "END_TOKENS",
    "LEARNER_TEXT",
    "MAX_PIXELS",
    "MIN_PIXELS",
    "QK_INIT_STD",
    "QWEN2_5_VL_CHAT_TEMPLATE",
    "QWEN_ADDED_TOKENS",
    "QWEN_PRETOKENIZE_REGEX",
    "RAW_RESPONSE_TEMPLATE",
    "SPECS",
    "TINY_MODEL_VERSION",
    "TinyModelSpec",
    "build_config",
    "build_processor",
    "build_tiny_model",
    "build_tokenizer",
    "default_cache_root",
    "source_digest",
    "tiny_model_dir",
]
