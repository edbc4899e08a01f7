"""Algorithm registry: name -> (training-arguments dataclass, train function); one small module each."""

from __future__ import annotations


def _sft():
    from rlreason.algorithms.sft import SFTArgs, train

    return SFTArgs, train


def _grpo():
    from rlreason.algorithms.grpo import train
    from rlreason.rl_config import RLConfig

    return RLConfig, train


def _ppo():
    from rlreason.algorithms.ppo import train
    from rlreason.rl_config import RLConfig

    return RLConfig, train


def _score():
    from rlreason.algorithms.score import train
    from rlreason.rl_config import RLConfig

    return RLConfig, train


def _star():
    from rlreason.algorithms.star import StarConfig, train

    return StarConfig, train


def _verifier():
    from rlreason.algorithms.verifier import VerifierConfig, train

    return VerifierConfig, train


_LOADERS = {"sft": _sft, "grpo": _grpo, "ppo": _ppo, "score": _score, "star": _star, "verifier": _verifier}


class _Registry(dict):
    """Loads an algorithm's module (and TRL) only when it is used."""

    def __getitem__(self, name):
        return _LOADERS[name]()

    def __contains__(self, name):
        return name in _LOADERS

    def __iter__(self):
        return iter(_LOADERS)

    def keys(self):
        return _LOADERS.keys()


ALGORITHMS = _Registry()


def register_algorithm(name: str, loader) -> None:
    """Add an algorithm: `loader()` returns (training-arguments class, train(recipe) -> output path)."""
    _LOADERS[name] = loader
