-- wrk script: GET a random object among N (env BENCH_OBJECTS, default 200) named /bench/seg_NNN.ts.
local n = tonumber(os.getenv("BENCH_OBJECTS") or "200")
math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16) % 1000)
request = function()
  return wrk.format("GET", string.format("/bench/seg_%03d.ts", math.random(0, n - 1)))
end
