"""A CLIP tokenizer for a closed vocabulary, built offline.

No tokenizer can be downloaded here, so the demo model and the tiny test pipelines build one:
byte-level BPE exactly as CLIP's, with merges that assemble every listed word into one token.
Unknown words still tokenize, byte by byte, as CLIP's own tokenizer would.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from transformers import CLIPTokenizer

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
END_OF_WORD = "</w>"


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from bytes to printable unicode characters."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


def vocab_and_merges(words: Iterable[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Base byte alphabet (with and without end-of-word), then left-to-right merges for each word."""
    vocab: dict[str, int] = {}
    merges: list[tuple[str, str]] = []

    def add(token: str) -> None:
        vocab.setdefault(token, len(vocab))

    alphabet = list(_bytes_to_unicode().values())
    for ch in alphabet:
        add(ch)
    for ch in alphabet:
        add(ch + END_OF_WORD)
    seen: set[tuple[str, str]] = set()
    byte_map = _bytes_to_unicode()
    for word in sorted({w.lower() for w in words}):
        if not word or any(c.isspace() for c in word):
            raise ValueError(f"tokenizer word {word!r} must be non-empty and contain no whitespace")
        chars = [byte_map[b] for b in word.encode("utf-8")]
        symbols = chars[:-1] + [chars[-1] + END_OF_WORD]
        while len(symbols) > 1:
            pair = (symbols[0], symbols[1])
            if pair not in seen:
                seen.add(pair)
                merges.append(pair)
            symbols = [symbols[0] + symbols[1], *symbols[2:]]
            add(symbols[0])
    add(BOS)
    add(EOS)
    return vocab, merges


def build_clip_tokenizer(words: Iterable[str], out_dir: str | Path | None = None, max_length: int = 77) -> CLIPTokenizer:
    """A CLIPTokenizer whose vocabulary holds `words` as single tokens; saved to `out_dir` if given.

    Besides the tokenizer.json of transformers 5, vocab.json and merges.txt are written so that
    older transformers releases load the same directory.
    """
    vocab, merges = vocab_and_merges(words)
    tok = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)
    if out_dir is not None:
        out = Path(out_dir)
        tok.save_pretrained(out)
        (out / "vocab.json").write_text(json.dumps(vocab))
        (out / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    return tok
