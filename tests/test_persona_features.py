"Tests of the SAE persona-feature library: exact scores, geometry helpers, caching, bad input."
import numpy as np
import pytest
import torch

from sfp_nb.studies.em import EMConfig
from sfp_nb.studies.persona_features import (FeatureConfig, PersonaSAE, cos_to, in_subspace,
                                             latent_effect, persona_sae, persona_scores,
                                             probe_sequences, rise)
from sfp_nb.processes import ProcessSpec
from sfp_nb.sae import SAEConfig, TopKSAE

SHARED = ProcessSpec("em_world", switch=0.125)

@pytest.fixture(scope="module")
def probes():
    return probe_sequences(EMConfig(world=SHARED), 128, seed=1)

def test_probe_sequences_are_deterministic_and_labelled(probes):
    again = probe_sequences(EMConfig(world=SHARED), 128, seed=1)
    assert np.array_equal(probes.tokens, again.tokens)
    assert np.allclose(probes.posterior, again.posterior)
    assert probes.posterior.shape == probes.task.shape == (128 * 15,)
    assert ((probes.posterior > -1e-9) & (probes.posterior < 1 + 1e-9)).all()

def test_persona_scores_exact(probes):
    Z = np.stack([probes.posterior, (probes.task == 2).astype(float),
                  np.zeros_like(probes.posterior), -probes.posterior + 1], 1)
    sc = persona_scores(Z, probes)
    assert np.isclose(sc["auroc"][0], 1) and np.isclose(sc["corr"][0], 1)
    assert np.isclose(sc["auroc"][3], 0) and np.isclose(sc["corr"][3], -1)
    assert np.isclose(sc["task_auroc"][2, 1], 1)
    assert list(sc["alive"]) == [True, True, False, True] and sc["auroc"][2] == 0.5

def test_geometry_helpers():
    assert np.isclose(cos_to([1, 0], [0, 2]), 0) and np.isclose(cos_to([1, 1], [2, 2]), 1)
    basis = np.array([[1.0, 1, 0], [0, 0, 1]])
    assert np.isclose(in_subspace([2.0, 2, 5], basis), 1)
    assert np.isclose(in_subspace([1.0, -1, 0], basis), 0)
    assert np.isclose(in_subspace([1.0, 0, 0], basis), 2**-0.5)

def test_latent_effect_by_hand():
    causal = {"base": {"pre": {"T1": 0.2, "T2": 0.1}, "ft": {"T1": 1.0, "T2": 0.3}},
              "top": {"up": [{"T1": 0.6, "T2": 0.5}], "down": [{"T1": 1.2, "T2": 0.0}],
                      "ablate": {"T1": 0.2, "T2": 0.1}}}
    assert np.allclose(latent_effect(causal, "top", "up", ("T1", "T2")), (0.8, 1.0))
    assert np.allclose(latent_effect(causal, "top", "down", ("T1",)), (-0.2, 0.8))  # moved further
    assert np.allclose(latent_effect(causal, "top", "ablate", ("T1", "T2")), (1.0, 1.0))  # all undone
    with pytest.raises(KeyError):
        latent_effect(causal, "persona", "up", ("T1",))

def test_rise_is_zero_on_the_same_rows():
    sae = TopKSAE(SAEConfig(d_in=6, n_latents=12, k=2))
    X = np.random.default_rng(0).normal(size=(50, 6)).astype(np.float32)
    assert np.allclose(rise(sae, X, X), 0)
    assert rise(sae, X, X).shape == (12,)

def test_configs_reject_bad_input_and_round_trip():
    with pytest.raises(ValueError, match="model"):
        PersonaSAE(model="post")
    cfg = FeatureConfig(strengths=[0.1, 1])
    assert cfg.strengths == (0.1, 1.0)
    s = cfg.sae_of("ft")
    assert s.model == "ft" and s.sae.seed == cfg.em.seed

def test_persona_sae_trains_once_and_loads(tmp_path, monkeypatch):
    monkeypatch.setenv("SFP_ARTIFACTS", str(tmp_path))
    monkeypatch.setenv("SFP_PROGRESS", "0")
    em = EMConfig(world=SHARED, pretrain_steps=3, ft_steps=2, n_eval=32, n_samples=0,
                  batch_size=16)
    cfg = PersonaSAE(em=em, n_train=32, sae=SAEConfig(d_in=64, n_latents=32, k=2, steps=5,
                                                    batch_size=64))
    sae, history = persona_sae(cfg)
    again, _ = persona_sae(cfg)
    assert history["steps"] == 5
    assert torch.equal(sae.W_dec, again.W_dec)
    assert any(p.name == "sae.safetensors" for p in tmp_path.rglob("*"))
