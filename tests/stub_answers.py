"""What the stub LLM answers, decided by the text of the prompt (tests only).

Three kinds of prompt reach it:
- the pairwise reranking prompt (``<query>``, ``<passage_a>``, ``<passage_b>``, and for the
  setwise prompt ``<passage_c>``...): it prefers the passage sharing most words with the
  query, ties to the first shown (the position bias small models show); its letters'
  log-probabilities (``judge_logprobs``) are a softmax over the words shared, plus half a word
  for the first shown, so the letter it names is always the likeliest;
- the harness's answer prompt ("Context: ... Question: ..."): it answers extractively, with
  the context sentence that shares most words with the question, or "I don't know";
- RAGAS's structured prompts (an instruction, a JSON schema, ``input: {...}``, ``Output:``):
  it reads the input and the schema and fills the schema from the input by word overlap,
  so a statement is supported when most of its content words are in the context.
Anything else gets "I cannot tell." (which a structured caller fails to parse, as it should).
"""

from __future__ import annotations

import html
import json
import math
import re
from typing import Any

_TAG = {name: re.compile(rf"<{name}>(.*?)</{name}>", re.DOTALL) for name in ("query", "passage_a", "passage_b")}
_WORD = re.compile(r"[a-z0-9]+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_NONCOMMITTAL = re.compile(r"\b(i don't know|i do not know|cannot tell|not (?:mentioned|in the context))\b", re.IGNORECASE)
_ANSWER = re.compile(r"Context:\s*(?P<context>.*?)\n\s*Question:\s*(?P<question>.*?)\n\s*Answer:", re.DOTALL)
_STOPWORDS = frozenset(
    "the and for are was were with that this from have has had not but what which who whom how why when where "
    "its into than then them they their there these those been being does did can could would should will about "
    "over such only also more most some any all one two out his her our you your".split()
)
SUPPORTED = 0.5  # share of a claim's content words that the evidence must hold


def overlap(query: str, passage: str) -> int:
    return len(set(_WORD.findall(query.lower())) & set(_WORD.findall(passage.lower())))


def content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if len(w) > 2 and w not in _STOPWORDS}


def support(claim: str, evidence: str) -> float:
    """Share of the claim's content words found in the evidence (1.0 for a claim without any)."""
    words = content_words(claim)
    return len(words & content_words(evidence)) / len(words) if words else 1.0


def sentences(text: str, limit: int = 8) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if content_words(s)][:limit]


def is_judgment(prompt: str) -> bool:
    return all(pattern.search(prompt) for pattern in _TAG.values())


def respond(prompt: str) -> str:
    if is_judgment(prompt):
        return judge(prompt)
    structured = structured_answer(prompt)
    if structured is not None:
        return json.dumps(structured)
    asked = _ANSWER.search(prompt)
    if asked:
        return extractive_answer(asked.group("question"), asked.group("context"))
    return "I cannot tell."


_PASSAGE = re.compile(r"<passage_([a-h])>(.*?)</passage_\1>", re.DOTALL)


FIRST_SHOWN_PULL = 0.5  # in words shared: breaks a tie for the first shown, never a real difference


def judge_logprobs(prompt: str) -> list[tuple[str, float]]:
    """Each shown letter with its log-probability, in the order shown."""
    query = html.unescape(_TAG["query"].search(prompt).group(1))  # type: ignore[union-attr]
    shown = [(letter.upper(), html.unescape(text)) for letter, text in _PASSAGE.findall(prompt)]
    logits = [overlap(query, text) + (FIRST_SHOWN_PULL if i == 0 else 0.0) for i, (_, text) in enumerate(shown)]
    top = max(logits)
    total = math.log(sum(math.exp(x - top) for x in logits)) + top
    return [(letter, logit - total) for (letter, _), logit in zip(shown, logits, strict=True)]


def judge(prompt: str) -> str:
    """The likeliest letter: most words shared with the query, ties to the first shown."""
    letters = judge_logprobs(prompt)
    return max(letters, key=lambda pair: pair[1])[0]


def extractive_answer(question: str, context: str) -> str:
    scored = [(len(content_words(question) & content_words(s)), s) for s in sentences(context, limit=200)]
    best = max(scored, key=lambda pair: pair[0], default=(0, ""))
    return best[1] if best[0] > 0 else "I don't know."


def structured_answer(prompt: str) -> dict[str, Any] | None:
    """Fill a RAGAS prompt's output schema from its input, or None if this is not one we know."""
    start, end = prompt.rfind("\ninput: "), prompt.rfind("\nOutput:")
    schema_at = prompt.find("JSON Schema:\n")
    if start < 0 or end < start or schema_at < 0:
        return None
    data = json.loads(prompt[start + len("\ninput: ") : end])
    schema = json.JSONDecoder().raw_decode(prompt[schema_at + len("JSON Schema:\n") :])[0]
    fields, given = set(schema.get("properties", {})), set(data)
    if fields == {"statements"} and given == {"question", "answer"}:  # faithfulness: claims of the answer
        return {"statements": sentences(data["answer"])}
    if fields == {"statements"} and given == {"context", "statements"}:  # faithfulness: is each claim supported?
        return {"statements": [_verdict(s, data["context"], "verdict", key="statement") for s in data["statements"]]}
    if fields == {"question", "noncommittal"}:  # response relevancy: the question this response answers
        response = data["response"]
        words = [w for w in _WORD.findall(response.lower()) if w in content_words(response)][:12]
        return {"question": "What about " + " ".join(words) + "?", "noncommittal": int(bool(_NONCOMMITTAL.search(response)))}
    if fields == {"reason", "verdict"} and {"context", "answer"} <= given:  # context precision: was this context useful?
        useful = support(data["context"], data["answer"]) >= SUPPORTED
        return {"reason": f"{'most' if useful else 'few'} of the context's words are in the answer", "verdict": int(useful)}
    if fields == {"classifications"} and {"context", "answer"} <= given:  # context recall: is each claim in the context?
        return {"classifications": [_verdict(s, data["context"], "attributed") for s in sentences(data["answer"])]}
    return None


def _verdict(claim: str, context: str, field: str, key: str = "statement") -> dict[str, Any]:
    share = support(claim, context)
    return {key: claim, "reason": f"{share:.0%} of its content words are in the context", field: int(share >= SUPPORTED)}
