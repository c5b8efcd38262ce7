"""Run under `accelerate launch --num_processes N`: generate with a sharded local backend, write the replies."""
import json
import sys

from handbook.core.backends import Sampling
from handbook.core.distributed import is_main_process, world_size
from handbook.toy.backends import build_backend
from handbook.toy import world

model_dir, out = sys.argv[1], sys.argv[2]
prompts = [p.text for p in world.sample_prompts(5, "heldout", seed=2)][:37]  # an odd count: uneven shards
backend = build_backend({"type": "transformers", "model_name_or_path": model_dir, "batch_size": 8})
replies = backend.chat([[{"role": "user", "content": p}] for p in prompts], Sampling(temperature=0.0, max_new_tokens=24))
if is_main_process():
    json.dump({"world_size": world_size(), "backend": type(backend).__name__, "replies": replies}, open(out, "w"))
