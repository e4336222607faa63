"""World benches (``tailor bench``): personalization (DreamBench protocol), spatial control and image prompts,
measured with the world's oracles. Shared parts live in :mod:`tailor.bench.common`, one module per bench."""
