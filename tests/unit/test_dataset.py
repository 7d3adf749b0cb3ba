"""The synthetic training data: deterministic and shaped like the marketplace."""

from __future__ import annotations

from collections import defaultdict

import pytest

from chalicelib.domain.features import AdFeatures
from training.dataset import CATEGORIES, GeneratedAd, generate_ads

N, SEED = 3000, 7


@pytest.fixture(scope="module")
def ads() -> list[GeneratedAd]:
    return generate_ads(N, SEED)


def test_same_seed_same_ads(ads: list[GeneratedAd]) -> None:
    assert generate_ads(N, SEED) == ads


def test_different_seed_different_ads(ads: list[GeneratedAd]) -> None:
    assert generate_ads(N, SEED + 1) != ads


def test_item_ids_are_1_to_n(ads: list[GeneratedAd]) -> None:
    assert [ad.item_id for ad in ads] == list(range(1, N + 1))


def test_sellers_have_several_ads_and_consistent_verification(ads: list[GeneratedAd]) -> None:
    verified: dict[int, set[bool]] = defaultdict(set)
    for ad in ads:
        assert 1 <= ad.seller_id <= N // 3
        verified[ad.seller_id].add(ad.is_verified_seller)
    assert all(len(flags) == 1 for flags in verified.values())
    assert len(verified) < N / 2  # sellers post several ads each
    assert {True, False} == {ad.is_verified_seller for ad in ads}


def test_class_balance_is_sane(ads: list[GeneratedAd]) -> None:
    rate = sum(ad.is_violation for ad in ads) / len(ads)
    assert 0.10 <= rate <= 0.45


def test_features_are_valid(ads: list[GeneratedAd]) -> None:
    for ad in ads:
        features = ad.features()
        assert isinstance(features, AdFeatures)
        assert features.validate() is features
        assert ad.category in CATEGORIES and 0 <= ad.images_qty <= 10
        assert ad.name.strip()


def test_text_mixes_russian_and_english(ads: list[GeneratedAd]) -> None:
    texts = [ad.name + " " + ad.description for ad in ads]
    assert any(any("а" <= ch <= "я" for ch in t.lower()) for t in texts)
    assert any(any("a" <= ch <= "z" for ch in t.lower()) for t in texts)


def test_risk_factors_raise_the_violation_rate(ads: list[GeneratedAd]) -> None:
    def rate(group: list[GeneratedAd]) -> float:
        return sum(ad.is_violation for ad in group) / len(group)

    risky = [ad for ad in ads if not ad.is_verified_seller and ad.images_qty == 0]
    safe = [ad for ad in ads if ad.is_verified_seller and ad.images_qty > 0]
    assert rate(risky) > 2 * rate(safe)


def test_single_ad() -> None:
    [ad] = generate_ads(1, 0)
    assert ad.item_id == 1 and ad.seller_id == 1
    with pytest.raises(ValueError):
        generate_ads(0, 0)
