"""dDPO — distilled direct preference optimisation from the dSFT model (the paper's Eq. 1).

* :mod:`.objective` — Eq. 1 written out: sequence log-probs, implicit rewards, the loss;
* :mod:`.batching` — length-aware batching for pairs and a length-sorted reference pass;
* :mod:`.training` — TRL's ``DPOTrainer`` from the dSFT model against itself, frozen.
"""
