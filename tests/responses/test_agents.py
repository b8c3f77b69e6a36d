"""Today's agents on the gateway's Responses API, with the real embedded model: the OpenAI Agents
SDK (``openai-agents`` from PyPI) runs an agent with one function tool, and Codex CLI (the
``@openai/codex`` npm package) completes a one-turn ``codex exec`` through a custom model provider
with ``wire_api = "responses"``. Neither is changed: the Agents SDK gets the gateway's base URL and
key, Codex a config file naming the gateway as its provider."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from agents import (
    Agent,
    ModelSettings,
    Runner,
    function_tool,
    set_default_openai_api,
    set_default_openai_client,
    set_tracing_disabled,
)
from openai import AsyncOpenAI

from tests.conftest import MODEL
from tests.responses.codex import codex_binary
from tests.support.procs import Gateway


async def test_an_agent_with_one_function_tool(gateway: Gateway) -> None:
    set_tracing_disabled(True)  # traces would be exported to OpenAI; nothing leaves loopback here
    client = AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key=str(gateway.api_key), max_retries=0, timeout=600)
    set_default_openai_client(client, use_for_tracing=False)
    set_default_openai_api("responses")
    calls: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """Current weather in a city."""
        calls.append(city)
        return f"Sunny, 21 C in {city}"

    agent = Agent(
        name="weather",
        instructions="Answer weather questions with get_weather.",
        tools=[get_weather],
        model=MODEL,
        model_settings=ModelSettings(tool_choice="required", max_tokens=60, temperature=0),
        # The 0.5B model keeps calling tools when it may: the tool's answer is the agent's answer.
        tool_use_behavior="stop_on_first_tool",
    )
    result = await Runner.run(agent, "What is the weather in Paris?", max_turns=2)
    assert calls == ["Paris"] and result.final_output == "Sunny, 21 C in Paris"
    history = result.to_input_list()
    assert [item.get("type", "message") for item in history] == ["message", "function_call", "function_call_output"]

    # The conversation goes on from the SDK's own replay of it (no stored response involved).
    follow_up = agent.clone(
        model_settings=ModelSettings(tool_choice="none", max_tokens=24, temperature=0),
        tool_use_behavior="run_llm_again",
    )
    ask = {"role": "user", "content": "Say it in one sentence."}
    answer = await Runner.run(follow_up, [*history, ask], max_turns=1)  # type: ignore[list-item]
    assert isinstance(answer.final_output, str) and answer.final_output.strip()
    assert calls == ["Paris"]


def codex_config(gateway: Gateway, instructions: Path) -> str:
    # Codex's own system prompt and tool set are longer than the embedded model's 8192-token
    # window: short instructions, and no web search or sub-agents (tools gatewright refuses).
    return f"""
model = "{MODEL}"
model_provider = "gatewright"
model_instructions_file = "{instructions}"
web_search = "disabled"
check_for_update_on_startup = false

[analytics]
enabled = false

[agents]
enabled = false

[features]
goals = false

[model_providers.gatewright]
name = "gatewright"
base_url = "{gateway.url}/v1"
env_key = "GATEWRIGHT_KEY"
wire_api = "responses"
"""


def test_codex_exec_completes_a_turn(gateway: Gateway, tmp_path: Path) -> None:
    binary = codex_binary()
    home, work = tmp_path / "codex-home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    instructions = tmp_path / "instructions.md"
    instructions.write_text("You are a terse assistant. Answer in one short sentence. Run no commands.\n")
    (home / "config.toml").write_text(codex_config(gateway, instructions))
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "CODEX_HOME": str(home),
        "GATEWRIGHT_KEY": str(gateway.api_key),
        # Anything but the gateway on loopback goes to a closed port: Codex cannot reach the internet.
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "HTTP_PROXY": "http://127.0.0.1:9",
        "NO_PROXY": "127.0.0.1,localhost",
    }
    last = tmp_path / "last-message.txt"
    command = [str(binary), "exec", "--skip-git-repo-check", "--json", "-o", str(last), "-C", str(work)]
    done = subprocess.run(
        [*command, "Reply with the single word: hello"],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    kinds = [event["type"] for event in events]
    assert "turn.completed" in kinds and "turn.failed" not in kinds, done.stdout
    messages = [
        e["item"]["text"] for e in events if e["type"] == "item.completed" and e["item"]["type"] == "agent_message"
    ]
    assert messages and messages[-1].strip() and last.read_text().strip() == messages[-1].strip()
    usage = next(e["usage"] for e in events if e["type"] == "turn.completed")
    assert usage["input_tokens"] > 100 and usage["output_tokens"] > 0  # the gateway's usage, as Codex read it
