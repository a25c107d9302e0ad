"""Engine glue that needs no vLLM import: the settings PoLar reads from
``additional_config["polar"]`` (:mod:`.config`, loaded through :mod:`.config_loading`), which
program a request runs (:mod:`.request_programs`), the program-aware admission order
(:mod:`.batching`) and the KV-cache group of every (layer, pass) slot (:mod:`.kv_groups`).
The vLLM-version hooks that use them live in :mod:`polar_vllm.compat`.
"""
