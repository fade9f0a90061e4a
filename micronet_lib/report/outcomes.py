"""Per-image test outcomes of a trained run (issue #28): kept in the run's record by
:mod:`micronet_lib.train.outcomes` (below the experiments, which pair runs by image); the names stay
importable from here."""

from micronet_lib.train.outcomes import (
    NAME,
    SYNTHETIC_TEST_SEED,
    Outcomes,
    decode_classes,
    encode_classes,
    outcome_dataset,
    stack_correct,
    test_outcomes,
)

__all__ = ["Outcomes", "outcome_dataset", "test_outcomes", "stack_correct", "encode_classes", "decode_classes"]
