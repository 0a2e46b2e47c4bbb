"""The RR-irregularity rule study (models/recipes/ecg_rr_rule.py): which records it switches to AF, and
that the nested choice only adopts a rule that gains sensitivity within the specificity budget."""
import numpy as np

from medexport.models.recipes.ecg_rr_rule import apply_rule, choose_rule, nested, record_irregularity

# normal, af, other, noisy
PROBS = np.array([[0.1, 0.3, 0.5, 0.1],   # other, AF second
                  [0.1, 0.3, 0.5, 0.1],   # same scores, regular rhythm
                  [0.1, 0.1, 0.3, 0.5],   # noisy, other second
                  [0.6, 0.3, 0.05, 0.05],  # normal, AF second: never switched
                  [0.1, 0.7, 0.1, 0.1]])  # already AF
IRREGULAR = np.array([[0.2, 0.30, 0.7], [0.02, 0.03, 0.0], [0.2, 0.30, 0.7], [0.2, 0.30, 0.7], [0.2, 0.30, 0.7]])


def test_rule_switches_only_irregular_other_or_noisy_with_af_second():
    assert apply_rule(PROBS, IRREGULAR, None).tolist() == [2, 2, 3, 0, 1]
    assert apply_rule(PROBS, IRREGULAR, (0.15, 0.5, 0.2)).tolist() == [1, 2, 3, 0, 1]
    assert apply_rule(PROBS, IRREGULAR, (0.15, 0.5, 0.35)).tolist() == [2, 2, 3, 0, 1]  # AF score below af_min


def test_nested_choice_adopts_a_rule_only_where_it_pays():
    rng = np.random.default_rng(0)
    labels = np.repeat([1, 2], 40)  # AF records the network calls other (AF second), irregular; others regular
    probs = np.tile([0.1, 0.35, 0.45, 0.1], (80, 1))
    irregular = np.where((labels == 1)[:, None], [0.2, 0.3, 0.7], [0.03, 0.04, 0.0]) + rng.uniform(0, 0.01, (80, 3))
    folds = np.arange(80) % 4
    pred, rules = nested({"as recorded": probs}, {"as recorded": irregular}, labels, folds, 0.01)
    assert all(r is not None for r in rules) and (pred["as recorded"] == labels).all()
    regular = np.tile([0.03, 0.04, 0.0], (80, 1))  # no irregularity to use: no rule
    assert choose_rule({"x": probs}, {"x": regular}, labels, np.arange(80), 0.01) is None


def test_irregularity_is_the_tokens_record_features():
    tokens = np.zeros((5, 10), np.float32)
    tokens[:, -3:] = [0.1, 0.2, 0.3]
    assert np.allclose(record_irregularity(tokens), [0.1, 0.2, 0.3]) and not record_irregularity(tokens[:0]).any()
