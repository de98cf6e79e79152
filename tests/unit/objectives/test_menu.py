"""The objectives after Diffusion-DPO: soft labels and label smoothing, IPO, hinge, MaPO and the
winner guard, each against values worked by hand (the arithmetic in each docstring)."""

import pytest
import torch
import torch.nn.functional as F

from prefdiff.objectives import OBJECTIVES
from prefdiff.objectives.dpo import DPOObjective
from prefdiff.objectives.guard import guard_scale, scale_gradient
from prefdiff.objectives.hinge import HingeObjective
from prefdiff.objectives.ipo import IPOObjective
from prefdiff.objectives.mapo import MaPOObjective

# The two pairs of test_dpo.py, beta = 2000: margins x = 0.5 and x = -1.0 (worked there).
ERR_W = torch.tensor([0.100, 0.300], dtype=torch.float64)
ERR_L = torch.tensor([0.200, 0.050], dtype=torch.float64)
REF_W = torch.tensor([0.101, 0.299], dtype=torch.float64)
REF_L = torch.tensor([0.2005, 0.050], dtype=torch.float64)


def test_soft_labels_and_smoothing_for_dpo():
    """loss = -log sigmoid(x) + (1 - q) x.  -log sigmoid(0.5) = 0.474077, -log sigmoid(-1) = 1.313262.

    Soft labels q = (0.8, 1.0): pair 1: 0.474077 + 0.2 * 0.5 = 0.574077; pair 2 unchanged 1.313262.
    Smoothing eps = 0.1 on hard labels, q = 0.9: pair 1: 0.474077 + 0.05 = 0.524077;
    pair 2: 1.313262 + 0.1 * (-1) = 1.213262.
    grad_factor = 0.5 * beta * (q - sigmoid(x)); pair 1 with q = 0.8: 1000 * (0.8 - 0.622459) = 177.541.
    """
    soft = DPOObjective(beta=2000.0)(ERR_W, ERR_L, REF_W, REF_L, torch.tensor([0.8, 1.0]))
    assert soft.loss_per_pair.tolist() == pytest.approx([0.574077, 1.313262], abs=1e-6)
    smoothed = DPOObjective(beta=2000.0, label_smoothing=0.1)(ERR_W, ERR_L, REF_W, REF_L, torch.ones(2))
    assert smoothed.loss_per_pair.tolist() == pytest.approx([0.524077, 1.213262], abs=1e-6)
    one = DPOObjective(beta=2000.0)(ERR_W[:1], ERR_L[:1], REF_W[:1], REF_L[:1], torch.tensor([0.8]))
    assert one.metrics["grad_factor"].item() == pytest.approx(177.541, abs=1e-3)


def test_hard_labels_reproduce_dpo_exactly():
    """p = 1 gives today's DPO bit for bit: -log sigmoid(inside), its gradient and its margin."""
    torch.manual_seed(0)
    errors = [torch.rand(6, dtype=torch.float64) for _ in range(4)]
    inside = -0.5 * 2000.0 * ((errors[0] - errors[2]) - (errors[1] - errors[3]))
    for labels in (None, torch.ones(6)):
        out = DPOObjective(beta=2000.0)(*errors, labels)
        assert torch.equal(out.loss_per_pair, -F.logsigmoid(inside))
        assert torch.equal(out.reward_margin_per_pair, inside)


@pytest.mark.parametrize("name", ["dpo", "ipo"])
def test_a_half_label_has_no_gradient_at_zero_margin(name):
    """p = 0.5 (a kept tie) at x = 0: DPO's d loss / d x = sigmoid(0) - 0.5 = 0; IPO's 2 (0 - 0) = 0."""
    err_w = torch.tensor([0.3, 0.7], requires_grad=True)
    err_l = torch.tensor([0.2, 0.4], requires_grad=True)
    out = OBJECTIVES.get(name)(beta=1000.0)(err_w, err_l, err_w.detach(), err_l.detach(), torch.full((2,), 0.5))
    out.loss.backward()
    assert err_w.grad.abs().max().item() == 0.0 and err_l.grad.abs().max().item() == 0.0


def test_ipo_values_worked_by_hand():
    """loss = (x - (q - 1/2))^2 + q (1 - q), x = (0.5, -1.0), beta = 2000.

    Hard: pair 1 (0.5 - 0.5)^2 = 0; pair 2 (-1 - 0.5)^2 = 2.25; mean 1.125.
    grad_factor = beta (q - 1/2 - x): pair 1 0, pair 2 2000 * 1.5 = 3000; mean 1500.
    Soft q = 0.8 on pair 1: (0.5 - 0.3)^2 + 0.16 = 0.2. At the reference, x = 0: (0 - 0.5)^2 = 0.25.
    """
    out = IPOObjective(beta=2000.0)(ERR_W, ERR_L, REF_W, REF_L)
    assert out.loss_per_pair.tolist() == pytest.approx([0.0, 2.25], abs=1e-9)
    assert out.metrics["grad_factor"].item() == pytest.approx(1500.0, rel=1e-6)
    soft = IPOObjective(beta=2000.0)(ERR_W, ERR_L, REF_W, REF_L, torch.tensor([0.8, 1.0]))
    assert soft.loss_per_pair[0].item() == pytest.approx(0.2, abs=1e-7)  # q = 0.8 held in float32


def test_hinge_values_worked_by_hand():
    """loss = max(0, 1 - x). A third pair: e_w 0.100 vs ref 0.1015 (-0.0015), loser equal to its
    reference: x = -1000 * (-0.0015) = 1.5. Losses (0.5, 2.0, 0.0), mean 0.833333;
    grad_factor 0.5 * beta * [x < 1] = (1000, 1000, 0), mean 666.667."""
    err_w = torch.cat([ERR_W, torch.tensor([0.100], dtype=torch.float64)])
    err_l = torch.cat([ERR_L, torch.tensor([0.3], dtype=torch.float64)])
    ref_w = torch.cat([REF_W, torch.tensor([0.1015], dtype=torch.float64)])
    ref_l = torch.cat([REF_L, torch.tensor([0.3], dtype=torch.float64)])
    out = HingeObjective(beta=2000.0)(err_w, err_l, ref_w, ref_l)
    assert out.loss_per_pair.tolist() == pytest.approx([0.5, 2.0, 0.0], abs=1e-9)
    assert out.metrics["grad_factor"].item() == pytest.approx(2000.0 / 3, rel=1e-9)
    with pytest.raises(ValueError, match="'hinge' takes hard labels"):
        HingeObjective()(err_w, err_l, ref_w, ref_l, torch.tensor([0.8, 1.0, 1.0]))


def test_mapo_values_worked_by_hand():
    """s = 0.5, T = 10, w = 0.1, e_w = 0.2, e_l = 0.4.

    g(0.2) = 0.1 / expm1(0.1) = 0.1 / 0.1051709 = 0.9508332; g(0.4) = 0.2 / 0.2214028 = 0.9033311
    m = 10 * (0.9508332 - 0.9033311) = 0.4750208
    loss = 0.2 - 0.1 * log sigmoid(0.4750208) = 0.2 + 0.1 * 0.4835811 = 0.2483581
    g'(0.2) = 0.5 (0.1051709 - 0.1 * 1.1051709) / 0.1051709^2 = -0.2416694
    grad_factor = 1 - 0.1 * sigmoid(-0.4750208) * 10 * g'(0.2) = 1 + 0.1 * 0.3834286 * 2.416694 = 1.0926630
    """
    out = MaPOObjective(timesteps=10.0)(
        torch.tensor([0.2], dtype=torch.float64), torch.tensor([0.4], dtype=torch.float64)
    )
    assert out.loss.item() == pytest.approx(0.2483581, abs=1e-7)
    assert out.metrics["reward_margin"].item() == pytest.approx(0.4750208, abs=1e-7)
    assert out.metrics["grad_factor"].item() == pytest.approx(1.0926630, abs=1e-6)
    assert out.metrics["implicit_acc"].item() == 1.0
    assert not MaPOObjective.needs_reference


@pytest.mark.parametrize("name", [n for n in OBJECTIVES.names() if n not in ("sft",)])
def test_grad_factor_is_the_derivative_of_the_loss(name):
    """Every objective that logs grad_factor logs d loss_per_pair / d e_w, checked by autograd
    away from the reference (random errors, float64)."""
    objective = OBJECTIVES.get(name)()
    if isinstance(getattr(objective, "beta", None), float):
        objective.beta = 300.0
    torch.manual_seed(1)
    err_w = (torch.rand(8, dtype=torch.float64) * 0.2 + 0.05).requires_grad_(True)
    err_l = torch.rand(8, dtype=torch.float64) * 0.2 + 0.05
    ref_w, ref_l = err_w.detach() + 0.01 * torch.randn(8, dtype=torch.float64), err_l + 0.01 * torch.randn(8)
    if not getattr(objective, "needs_losers", True):
        pytest.skip("no losers")
    labels = torch.linspace(0.6, 1.0, 8) if getattr(type(objective), "soft_labels", False) else None
    out = objective(err_w, err_l, ref_w, ref_l, labels)
    if "grad_factor" not in out.metrics:
        pytest.skip(f"{name} logs no grad_factor")
    (grad,) = torch.autograd.grad(out.loss_per_pair.sum(), err_w)
    assert out.metrics["grad_factor"].item() == pytest.approx(grad.mean().item(), rel=1e-6, abs=1e-9)


def test_guard_scale_worked_by_hand():
    """lambda = min(1, (1 - mu) sum(r_w^2) / sum(r_w r_l)) when sum(r_w r_l) > 0, else 1; mu = 0.9.

    r_w = (1, 0): own = 1.  r_l = (1, 1): shared 1 -> 0.1 * 1 / 1 = 0.1.
    r_l = (-1, 1): shared -1 < 0 -> 1.  r_l = (0.05, 0): shared 0.05 -> 0.1 / 0.05 = 2 -> 1.
    """
    r_w = torch.tensor([[1.0, 0.0]] * 3).view(3, 1, 1, 2)
    r_l = torch.tensor([[1.0, 1.0], [-1.0, 1.0], [0.05, 0.0]]).view(3, 1, 1, 2)
    assert guard_scale(r_w, r_l, 0.9).tolist() == pytest.approx([0.1, 1.0, 1.0])


def test_scaled_gradient_keeps_the_value():
    values = torch.tensor([0.3, 0.6], requires_grad=True)
    scaled = scale_gradient(values, torch.tensor([0.25, 1.0]))
    assert torch.equal(scaled, values.detach())
    scaled.sum().backward()
    assert values.grad.tolist() == [0.25, 1.0]


def test_guard_keeps_the_winner_error_from_rising():
    """Outputs as parameters (pred = theta + offset, one coordinate system for both images): a DPO
    step on a pair whose loser residual points along the winner's raises e_w without the guard;
    with the guard (mu = 0.5) e_w falls, by at least mu of what its own gradient alone would take
    off (to first order)."""

    def step(guard: bool) -> tuple[float, float]:
        theta = torch.zeros(1, 1, 1, 4, dtype=torch.float64, requires_grad=True)
        target_w = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64).view(1, 1, 1, 4)
        target_l = torch.tensor([3.0, 0.1, 0.0, 0.0], dtype=torch.float64).view(1, 1, 1, 4)
        e = lambda t: (theta - t).pow(2).mean(dim=(1, 2, 3))  # noqa: E731
        e_w, e_l = e(target_w), e(target_l)
        if guard:
            e_l = scale_gradient(e_l, guard_scale(theta - target_w, theta - target_l, 0.5))
        loss = DPOObjective(beta=1.0)(e_w, e_l, e_w.detach(), e_l.detach()).loss
        (grad,) = torch.autograd.grad(loss, theta)
        own = torch.autograd.grad(e(target_w).sum(), theta)[0]
        lr = 1e-3
        with torch.no_grad():
            after = ((theta - lr * grad) - target_w).pow(2).mean().item()
            before = e(target_w).item()
        expected_own_drop = lr * 0.25 * own.pow(2).sum().item()  # grad_factor beta/4 on e_w
        return after - before, expected_own_drop

    rise, _ = step(guard=False)
    assert rise > 0, "the unguarded loser push raises the winner's error here"
    change, own_drop = step(guard=True)
    assert change < 0 and -change >= 0.5 * own_drop * 0.99
