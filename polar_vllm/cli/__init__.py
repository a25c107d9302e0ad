"""The ``polar-vllm`` command (:mod:`.main`) and the demo behind ``make demo`` (:mod:`.demo`)."""
