"""The pair doctor: config, template and lineage checks that run before anything is merged."""

from frankmerge.doctor.check import FieldVerdict, PairCheck, check_pair, compare_configs

__all__ = ["FieldVerdict", "PairCheck", "check_pair", "compare_configs"]
