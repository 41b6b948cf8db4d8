"""What a node reads on its own side: its silo's data (:mod:`data`) and the cache of
decoded arrays its ClientApp processes share (:mod:`cache`)."""
