"""``RedisLimiter``: the rate limits' token buckets (``core.limits``) kept in Redis, so every
replica shares one limit."""

from __future__ import annotations

import logging
import time
from typing import Any

from redis.exceptions import RedisError

from gatewright.core.limits import UNLIMITED, Bucket, Defaults, limits_of, refusal, state_of
from gatewright.core.platform import LimitState, Principal

log = logging.getLogger("gatewright.limits")

# Both scripts read the clock of the Redis server, not of the caller: replicas' clocks differ, and
# calls reach Redis in another order than they read their clocks (a stamp from the future would
# drain the bucket). A bucket's key lives until it would be full again, plus a minute.
_BUCKET = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local function refill(key, capacity)
  if capacity <= 0 then return nil end
  local level = tonumber(redis.call('HGET', key, 'level') or capacity)
  local stamp = tonumber(redis.call('HGET', key, 'stamp') or now)
  local cap = tonumber(redis.call('HGET', key, 'cap') or capacity)
  if cap ~= capacity then level = capacity end
  return math.min(capacity, level + math.max(0, now - stamp) * capacity / 60.0)
end
local function save(key, capacity, level)
  redis.call('HSET', key, 'level', level, 'stamp', now, 'cap', capacity)
  redis.call('EXPIRE', key, math.ceil((capacity - level) * 60.0 / capacity) + 60)
end
"""

# One round trip: refill both buckets, check, take. Returns
# {verdict (1 admitted, 0 requests refused, 2 tokens refused), requests level, tokens level}, -1 = no limit.
_ACQUIRE = (
    _BUCKET
    + """
local rpm = tonumber(ARGV[1]); local tpm = tonumber(ARGV[2]); local cost = tonumber(ARGV[3])
local r = refill(KEYS[1], rpm); local t = refill(KEYS[2], tpm)
local verdict = 1
if r and r < 1 then verdict = 0 elseif t and t <= 0 then verdict = 2 end
if verdict == 1 then
  if r then r = r - 1 end
  if t then t = t - cost end
end
if r then save(KEYS[1], rpm, r) end
if t then save(KEYS[2], tpm, t) end
return {verdict, tostring(r or -1), tostring(t or -1)}
"""
)

# Charge tokens after the fact (a request's output); the bucket may go into debt.
_CHARGE = (
    _BUCKET
    + """
local capacity = tonumber(ARGV[1]); local cost = tonumber(ARGV[2])
local level = refill(KEYS[1], capacity) - cost
save(KEYS[1], capacity, level)
return tostring(level)
"""
)


class RedisLimiter:
    """The same buckets in Redis, updated atomically by Lua scripts; shared by every replica.

    When Redis cannot be reached, requests pass unlimited (and without rate-limit headers) and a
    warning is logged at most once a minute: an outage of the limiter must not become an outage
    of the gateway, and credits are guarded by the ledger, not here.
    """

    def __init__(self, client: Any, defaults: Defaults, namespace: str = "gatewright:rl") -> None:
        self.client = client
        self.defaults = defaults
        self.namespace = namespace
        self._acquire = client.register_script(_ACQUIRE)
        self._charge = client.register_script(_CHARGE)
        self._quiet_until = 0.0

    def _keys(self, principal: Principal) -> list[str]:
        return [f"{self.namespace}:{principal.key_id}:requests", f"{self.namespace}:{principal.key_id}:tokens"]

    def _unreachable(self, error: Exception) -> None:
        now = time.monotonic()
        if now >= self._quiet_until:
            self._quiet_until = now + 60
            log.warning("rate limits are not enforced: Redis is unreachable (%r)", error)

    async def acquire(self, principal: Principal, estimated_tokens: int) -> LimitState:
        rpm, tpm = limits_of(principal, self.defaults)
        if rpm is None and tpm is None:
            return UNLIMITED
        try:
            verdict, req_level, tok_level = await self._acquire(
                keys=self._keys(principal), args=[rpm or 0, tpm or 0, estimated_tokens]
            )
        except (RedisError, OSError) as error:
            self._unreachable(error)
            return UNLIMITED
        requests = Bucket(float(rpm), float(req_level), 0.0) if rpm else None
        tokens = Bucket(float(tpm), float(tok_level), 0.0) if tpm else None
        state = state_of(requests, tokens)
        if int(verdict) == 0 and requests is not None:
            raise refusal("requests", int(requests.capacity), (1 - requests.level) / requests.rate, state)
        if int(verdict) == 2 and tokens is not None:
            raise refusal("tokens", int(tokens.capacity), (1 - tokens.level) / tokens.rate, state)
        return state

    async def record_tokens(self, principal: Principal, tokens: int) -> None:
        _, tpm = limits_of(principal, self.defaults)
        if not tpm:
            return
        try:
            await self._charge(keys=self._keys(principal)[1:], args=[tpm, tokens])
        except (RedisError, OSError) as error:
            self._unreachable(error)
