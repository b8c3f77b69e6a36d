"""``POST /v1/embeddings`` through the official OpenAI SDK, on real gateway processes running the
embedded embedding model: the zero-config default catalog, and a catalog of embedding models only.
"""

from __future__ import annotations

import asyncio
import base64
import math

import httpx
import numpy as np
import openai
import pytest
from tokenizers import Tokenizer

from gatewright.backends.weights import PACKAGED_DIRS
from tests.conftest import MODEL
from tests.embeddings.conftest import CHEAP, EMBEDDING_MODEL, PRICEY, STARTING_CREDITS, reference, unit
from tests.support.procs import Gateway
from tests.upstream.conftest import Store

REF = reference()
SENTENCES: list[str] = REF["sentences"][:8]


def credits_for(tokens: int, usd_per_million: float) -> int:
    return math.ceil(tokens * usd_per_million * 2)  # 2,000,000 credits a USD, per million tokens


def vectors(response: openai.types.CreateEmbeddingResponse) -> np.ndarray:  # type: ignore[type-arg]
    assert [d.index for d in response.data] == list(range(len(response.data)))
    return np.array([d.embedding for d in response.data], dtype=np.float32)


# -- the zero-config gateway (default catalog) --------------------------------------------------


def test_one_text_matches_the_reference(client: openai.OpenAI) -> None:
    response = client.embeddings.create(model=EMBEDDING_MODEL, input=SENTENCES[1], encoding_format="float")
    assert response.object == "list" and response.model == EMBEDDING_MODEL
    assert response.data[0].object == "embedding" and len(response.data[0].embedding) == 384
    assert response.usage.prompt_tokens == response.usage.total_tokens == REF["tokens"][1]
    assert float(unit(vectors(response))[0] @ unit(REF["vectors"][1])) > 0.999


def test_a_batch_equals_its_inputs_one_by_one(client: openai.OpenAI) -> None:
    batch = client.embeddings.create(model=EMBEDDING_MODEL, input=SENTENCES, encoding_format="float")
    singles = [client.embeddings.create(model=EMBEDDING_MODEL, input=s, encoding_format="float") for s in SENTENCES]
    assert batch.usage.prompt_tokens == sum(s.usage.prompt_tokens for s in singles) == sum(REF["tokens"][:8])
    one_by_one = np.vstack([vectors(s) for s in singles])
    # In input order, and the same vectors (llama.cpp sums in another order inside a batch).
    assert np.abs(vectors(batch) - one_by_one).max() < 1e-4
    assert (unit(vectors(batch)) * unit(REF["vectors"][:8])).sum(axis=1).min() > 0.999


def test_base64_is_the_float_vectors_bit_for_bit(client: openai.OpenAI, gateway: Gateway) -> None:
    as_float = client.embeddings.create(model=EMBEDDING_MODEL, input=SENTENCES[:3], encoding_format="float")
    # The SDK decodes base64 itself; read the raw body too, as other clients would.
    raw = httpx.post(
        f"{gateway.url}/v1/embeddings",
        json={"model": EMBEDDING_MODEL, "input": SENTENCES[:3], "encoding_format": "base64"},
        headers={"authorization": f"Bearer {gateway.api_key}"},
        timeout=60,
    )
    assert raw.status_code == 200, raw.text
    decoded = np.array(
        [np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in raw.json()["data"]], dtype=np.float32
    )
    assert np.array_equal(decoded, vectors(as_float))  # JSON floats round-trip float32 exactly
    # Left unset, the SDK asks for base64 and decodes it into floats itself.
    via_sdk = client.embeddings.create(model=EMBEDDING_MODEL, input=SENTENCES[:3])
    assert np.array_equal(vectors(via_sdk), vectors(as_float))
    explicit = client.embeddings.create(model=EMBEDDING_MODEL, input=SENTENCES[:3], encoding_format="base64")
    assert [d.embedding for d in explicit.data] == [d["embedding"] for d in raw.json()["data"]]


def test_token_arrays_are_the_models_own_ids(client: openai.OpenAI) -> None:
    tokenizer = Tokenizer.from_file(str(PACKAGED_DIRS[EMBEDDING_MODEL].directory() / "tokenizer.json"))
    tokenizer.no_padding()
    ids = [tokenizer.encode(s).ids for s in SENTENCES[:2]]
    as_text = client.embeddings.create(model=EMBEDDING_MODEL, input=SENTENCES[:2], encoding_format="float")
    as_ids = client.embeddings.create(model=EMBEDDING_MODEL, input=ids, encoding_format="float")
    one = client.embeddings.create(model=EMBEDDING_MODEL, input=ids[0], encoding_format="float")
    assert np.array_equal(vectors(as_ids), vectors(as_text))
    assert np.abs(vectors(one)[0] - vectors(as_text)[0]).max() < 1e-4  # alone vs in a batch: rounding
    assert as_ids.usage.prompt_tokens == len(ids[0]) + len(ids[1])


def test_the_default_model_keeps_its_dimensions(client: openai.OpenAI) -> None:
    same = client.embeddings.create(model=EMBEDDING_MODEL, input="x", dimensions=384, encoding_format="float")
    assert len(same.data[0].embedding) == 384
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model=EMBEDDING_MODEL, input="x", dimensions=128)
    assert caught.value.body["param"] == "dimensions"  # type: ignore[index]
    assert "384" in caught.value.body["message"]  # type: ignore[index]


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"model": MODEL, "input": "hi"}, "model", "model_not_embedding"),
        ({"model": "no-such-model", "input": "hi"}, "model", "model_not_found"),
        ({"model": EMBEDDING_MODEL, "input": ""}, "input", "invalid_value"),
        ({"model": EMBEDDING_MODEL, "input": []}, "input", "invalid_value"),
        ({"model": EMBEDDING_MODEL, "input": ["ok", ""]}, "input[1]", "invalid_value"),
        ({"model": EMBEDDING_MODEL, "input": [[101, 102], []]}, "input[1]", "invalid_value"),
        ({"model": EMBEDDING_MODEL, "input": [101, 99999999]}, "input", "invalid_value"),
        ({"model": EMBEDDING_MODEL, "input": ["ok", 5]}, "input", None),
        ({"model": EMBEDDING_MODEL, "input": ["x"] * 2049}, "input", "too_many_inputs"),
        ({"model": EMBEDDING_MODEL, "input": "word " * 300}, "input", "context_length_exceeded"),
        ({"model": EMBEDDING_MODEL, "input": ["a", "word " * 300]}, "input[1]", "context_length_exceeded"),
        ({"model": EMBEDDING_MODEL, "input": "x", "encoding_format": "int8"}, "encoding_format", None),
        ({"model": EMBEDDING_MODEL, "input": "x", "dimensions": 0}, "dimensions", None),
    ],
)
def test_bad_requests_are_400s_naming_the_parameter(
    gateway: Gateway, body: dict[str, object], param: str, code: str | None
) -> None:
    reply = httpx.post(
        f"{gateway.url}/v1/embeddings", json=body, headers={"authorization": f"Bearer {gateway.api_key}"}, timeout=60
    )
    error = reply.json()["error"]
    assert reply.status_code == (404 if code == "model_not_found" else 400), reply.text
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param or (param == "input" and str(error["param"]).startswith("input")), error
    if code is not None:
        assert error["code"] == code, error


def test_truncation_only_when_asked(client: openai.OpenAI) -> None:
    long = REF["sentences"][9]  # 306 tokens; the reference cuts it to 256
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model=EMBEDDING_MODEL, input=long)
    assert caught.value.body["param"] == "input"  # type: ignore[index]
    cut = client.embeddings.create(
        model=EMBEDDING_MODEL, input=long, encoding_format="float", extra_body={"truncate_prompt_tokens": -1}
    )
    assert cut.usage.prompt_tokens == 256
    assert float(unit(vectors(cut))[0] @ unit(REF["vectors"][9])) > 0.999


def test_chat_on_an_embedding_model_is_a_400_naming_model(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=EMBEDDING_MODEL, messages=[{"role": "user", "content": "hi"}])
    assert caught.value.body["param"] == "model" and caught.value.body["code"] == "model_not_chat"  # type: ignore[index]


def test_models_list_tells_embedding_models_apart(client: openai.OpenAI) -> None:
    models = {m.id: m.model_extra or {} for m in client.models.list().data}
    embedding, chat = models[EMBEDDING_MODEL], models[MODEL]
    assert embedding["type"] == "embedding" and embedding["endpoints"] == ["/v1/embeddings"]
    assert embedding["embedding"]["dimensions"] == 384 and embedding["context_window"] == 256
    assert chat["type"] == "chat" and "/v1/embeddings" not in chat["endpoints"]


def test_billed_per_input_token_to_the_credit(client: openai.OpenAI, gateway: Gateway) -> None:
    store = Store(gateway.data_dir / "gatewright.db")
    before = store.balance()
    raw = client.embeddings.with_raw_response.create(model=EMBEDDING_MODEL, input=SENTENCES, encoding_format="float")
    response = raw.parse()
    request_id = raw.headers["x-request-id"]
    tokens = response.usage.prompt_tokens
    charged = (response.model_extra or {})["meta"]["usage"]["credits_used"]
    assert charged == credits_for(tokens, 0.01)  # default.toml: 0.01 USD per million input tokens
    assert before - store.balance() == charged
    assert store.charges(request_id) == [-charged]  # one ledger row, a debit
    row = store.usage(request_id)
    assert row["input_tokens"] == tokens and row["output_tokens"] == 0 and row["model"] == EMBEDDING_MODEL
    assert row["dialect"] == "openai-embeddings" and row["latency_ms"] >= 0  # the request log's columns


# -- a catalog of embedding models only ------------------------------------------------------------


def test_shorter_vectors_are_cut_and_renormalised(embed_client: openai.OpenAI) -> None:
    full = vectors(embed_client.embeddings.create(model="minilm-cheap", input=SENTENCES[:2], encoding_format="float"))
    short = vectors(
        embed_client.embeddings.create(
            model="minilm-cheap", input=SENTENCES[:2], dimensions=64, encoding_format="float"
        )
    )
    assert short.shape == (2, 64)
    assert np.allclose(np.linalg.norm(short, axis=1), 1.0, atol=1e-5)
    assert np.allclose(short, unit(full[:, :64]), atol=1e-6)
    with pytest.raises(openai.BadRequestError) as caught:
        embed_client.embeddings.create(model="minilm-cheap", input="x", dimensions=16)
    assert caught.value.body["param"] == "dimensions" and "between 32 and 384" in caught.value.body["message"]  # type: ignore[index]


def test_limits_on_inputs_and_total_tokens(embed_client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        embed_client.embeddings.create(model="minilm-cheap", input=["x"] * 9)
    assert caught.value.body["code"] == "too_many_inputs"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as caught:
        embed_client.embeddings.create(model="minilm-cheap", input=["word " * 100] * 3)  # 3 × 102 > 200
    assert caught.value.body["code"] == "too_many_tokens" and caught.value.body["param"] == "input"  # type: ignore[index]


def test_402_before_any_work_and_exact_charges(embed_client: openai.OpenAI, embed_store: Store) -> None:
    before = embed_store.balance()
    assert before <= STARTING_CREDITS
    with pytest.raises(openai.APIStatusError) as caught:
        embed_client.embeddings.create(model="minilm-pricey", input=REF["sentences"][8])  # 155 tokens × 1,000 credits
    assert caught.value.status_code == 402
    assert embed_store.balance() == before and embed_store.reserved() == 0
    ok = embed_client.embeddings.create(model="minilm-pricey", input="Hello world", encoding_format="float")
    assert ok.usage.prompt_tokens == 4
    assert (ok.model_extra or {})["meta"]["usage"]["credits_used"] == credits_for(4, PRICEY) == 4000
    cheap = embed_client.embeddings.create(model="minilm-cheap", input=SENTENCES[:3], encoding_format="float")
    assert (cheap.model_extra or {})["meta"]["usage"]["credits_used"] == credits_for(cheap.usage.prompt_tokens, CHEAP)
    assert before - embed_store.balance() == 4000 + credits_for(cheap.usage.prompt_tokens, CHEAP)


def test_errors_are_not_billed(embed_client: openai.OpenAI, embed_store: Store) -> None:
    before = embed_store.balance()
    for bad in ({"input": "x", "dimensions": 8}, {"input": ["x"] * 9}, {"input": "word " * 300}):
        with pytest.raises(openai.BadRequestError):
            embed_client.embeddings.create(model="minilm-cheap", **bad)  # type: ignore[arg-type]
    assert embed_store.balance() == before and embed_store.reserved() == 0


async def test_concurrent_requests_bill_exactly_what_each_was_told(embed_gateway: Gateway, embed_store: Store) -> None:
    client = openai.AsyncOpenAI(base_url=f"{embed_gateway.url}/v1", api_key=embed_gateway.api_key, max_retries=0)
    before = embed_store.balance()
    inputs = [SENTENCES[i % 8 : i % 8 + 1 + i % 3] for i in range(12)]
    replies = await asyncio.gather(
        *(client.embeddings.create(model="minilm-cheap", input=batch, encoding_format="float") for batch in inputs)
    )
    told = [(r.model_extra or {})["meta"]["usage"]["credits_used"] for r in replies]
    assert told == [credits_for(r.usage.prompt_tokens, CHEAP) for r in replies]
    assert [len(r.data) for r in replies] == [len(b) for b in inputs]
    assert before - embed_store.balance() == sum(told) and embed_store.reserved() == 0
    await client.close()
