import pytest

from inforeg.config import RegulatorConfig


def test_defaults_are_the_papers_inforeg():
    cfg = RegulatorConfig()
    assert (cfg.name, cfg.resolved_variant, cfg.unimodal_loss, cfg.beta) == (
        "inforeg",
        "paper",
        False,
        0.9,
    )
    assert cfg.resolved_schedule == "window"
    assert (cfg.resolved_score, cfg.resolved_threshold) == ("nll", 0.04)


def test_official_variant_resolves_its_own_score_and_threshold():
    cfg = RegulatorConfig(variant="official")
    assert (cfg.resolved_score, cfg.resolved_threshold) == ("prob_sum", 0.05)
    explicit = RegulatorConfig(variant="official", score="nll", threshold=0.1)
    assert (explicit.resolved_score, explicit.resolved_threshold) == ("nll", 0.1)
    assert RegulatorConfig(name="ogm_ge").resolved_score == "prob_sum"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": "agm2"}, "regulator.name"),
        ({"variant": "code"}, "regulator.variant"),
        ({"schedule": "sometimes"}, "regulator.schedule"),
        ({"impl": "cuda"}, "regulator.impl"),
        ({"score": "acc"}, "regulator.score"),
        ({"name": "ogm_ge", "score": "nll"}, "regulator.score"),
        ({"beta": 0.0}, "regulator.beta"),
        ({"beta": float("nan")}, "regulator.beta"),
        ({"alpha": -1.0}, "regulator.alpha"),
        ({"threshold": float("inf")}, "regulator.threshold"),
        ({"official_lead_coef": -0.1}, "regulator.official_lead_coef"),
        ({"official_span": 0}, "regulator.official_span"),
        ({"modulation_starts": 5, "modulation_ends": 4}, "regulator.modulation_ends"),
        ({"unimodal_loss": "yes"}, "regulator.unimodal_loss"),
        ({"name": "ogm", "variant": "paper"}, "regulator.variant"),
        ({"schedule": "outside_window"}, "regulator.schedule"),
        ({"name": "mmpareto", "unimodal_loss": True}, "regulator.unimodal_loss"),
        ({"name": "gblending", "unimodal_loss": True}, "regulator.unimodal_loss"),
        ({"name": "pmr", "variant": "paper"}, "regulator.variant"),
        ({"pmr_momentum": 1.0}, "regulator.pmr_momentum"),
        ({"gblending_super_epoch": 0}, "regulator.gblending_super_epoch"),
        ({"mmpareto_gamma": 0.0}, "regulator.mmpareto_gamma"),
        ({"noise_seed": -1}, "regulator.noise_seed"),
        ({"name": "agm", "agm_clip": 1}, "regulator.agm_clip"),
        ({"name": "agm", "agm_clip_threshold": 0.0}, "regulator.agm_clip_threshold"),
        ({"name": "agm", "agm_clip_norm": float("inf")}, "regulator.agm_clip_norm"),
    ],
)
def test_bad_values_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        RegulatorConfig(**kwargs)


@pytest.mark.parametrize(
    ("name", "variant", "schedule", "window"),
    [
        ("joint", "paper", "always", "paper"),
        ("inforeg", "paper", "window", "paper"),
        ("ogm", "official", "always", "paper"),
        ("ogm_ge", "official", "always", "paper"),
    ],
)
def test_null_fields_resolve_per_method(name, variant, schedule, window):
    cfg = RegulatorConfig(name=name)
    assert cfg.resolved_variant == variant and cfg.variant is None
    assert cfg.schedule == cfg.resolved_schedule == schedule  # resolved when built
    assert cfg.resolved_window == window
    assert RegulatorConfig(name=name, schedule="outside").schedule == "outside"
    if name == "inforeg":
        official = RegulatorConfig(name=name, variant="official")
        assert official.resolved_window == "official"
