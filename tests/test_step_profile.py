"""experiments/step_profile.py: which of the step's operations are the attention's, their profiled times, errors."""

import json
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest
from conftest import load_repo_module
from jax.experimental.compilation_cache import compilation_cache

from pfca_jax.models.attention import get_attention
from pfca_jax.models.fast.attention import FAST_VERSIONS
from pfca_jax.models.fast.conv import Conv

step_profile = load_repo_module('experiments/step_profile.py')

HLO = '''HloModule m

%fused_computation (p: f32[4]) -> f32[4] {
  %p = f32[4]{0} parameter(0)
  ROOT %m = f32[4]{0} multiply(%p, %p), metadata={op_name="jit(step)/transpose(jvp(Net))/layer1/0/attention/mul"}
}

%fused_computation.1 (q: f32[4]) -> f32[4] {
  %q = f32[4]{0} parameter(0)
  ROOT %n = f32[4]{0} negate(%q), metadata={op_name="jit(step)/jvp(Net)/layer1/0/bn1/neg"}
}

ENTRY %main (x: f32[4]) -> f32[4] {
  %x = f32[4]{0} parameter(0), metadata={op_name="x"}
  %in_body = f32[4]{0} fusion(%x), kind=kLoop, calls=%fused_computation
  %elsewhere = f32[4]{0} fusion(%in_body), kind=kLoop, calls=%fused_computation.1
  %own = f32[4]{0} add(%elsewhere, %x), metadata={op_name="jit(step)/jvp(Net)/layer1/0/bn3/add"}
  ROOT %not_a_module = f32[4]{0} add(%own, %x), metadata={op_name="jit(step)/jvp(Net)/attention_like/add"}
}
'''


def test_operations_are_scoped_by_their_own_or_their_bodys_metadata():
  # The fusion counts through its body; bn3 (where PFCA is fused in ResNets) by its own metadata;
  # bn1 and a name that only starts like the scope do not.
  assert step_profile.scoped_operations(HLO) == {'in_body', 'own'}
  assert step_profile.scoped_operations(HLO, r'/bn1/') == {'elsewhere'}


class State(NamedTuple):
  params: Any


class TinyEntry:
  """What step_profile uses of a timing.Entry, for a conv and an attention in a module named `scope_name`.

  The convolution leaves its bias to the attention, as in MSRResNet, so `none` has an operation in
  the scope too (the bias add).
  """

  def __init__(self, attention, scope_name='attention'):
    class Net(nn.Module):
      @nn.compact
      def __call__(self, x):
        y, bias = Conv(8, (3, 3), padding=1)(x, add_bias=False)
        fast = FAST_VERSIONS[get_attention(attention).func]
        return jnp.sum(jnp.square(fast(name=scope_name)(y, bias=bias)))

    net = Net()
    self.batch_data = jnp.ones((2, 8, 8, 3))
    self.state = State(net.init(jax.random.PRNGKey(0), self.batch_data))

    def step(state, batch):
      loss, grads = jax.value_and_grad(lambda p: net.apply(p, batch))(state.params)
      return State(jax.tree.map(lambda p, g: p - 1e-3 * g, state.params, grads)), loss

    self.step = jax.jit(step)
    # Not from the session's persistent compilation cache: its key ignores the operations' names, so a
    # program differing only in a module's name would come back with the other program's names.
    jax.config.update('jax_enable_compilation_cache', False)
    try:
      self.hlo_text = self.step.lower(self.state, self.batch_data).compile().as_text()
    finally:
      jax.config.update('jax_enable_compilation_cache', True)

  def compile(self):
    pass

  def run(self, n):
    for _ in range(n):
      self.state, loss = self.step(self.state, self.batch_data)
    jax.block_until_ready(loss)


@pytest.fixture
def uncached_compiles():
  # The two programs below differ only in their metadata, which the persistent compilation cache
  # (conftest.py) does not key on: the second could come back with the first one's scope names.
  # JAX decides once per process whether the cache is used: reset_cache makes it read the flag again.
  jax.config.update('jax_enable_compilation_cache', False)
  compilation_cache.reset_cache()
  yield
  jax.config.update('jax_enable_compilation_cache', True)
  compilation_cache.reset_cache()


def test_an_attention_is_found_only_under_its_modules_name(uncached_compiles):
  assert step_profile.scoped_operations(TinyEntry('pfca').hlo_text)
  assert not step_profile.scoped_operations(TinyEntry('pfca', scope_name='other').hlo_text)


def test_profiled_rounds_pair_each_attention_with_none(tmp_path, monkeypatch, capsys, uncached_compiles):
  monkeypatch.setattr(step_profile.timing, 'Entry', lambda benchmark, attention, *args, **kwargs: TinyEntry(attention))
  out = tmp_path / 'profile.json'
  assert step_profile.main(['--benchmark=cifar_resnet20', '--attentions=none,pfca,se', '--rounds=2',
                            '--batch_size=8', f'--json={out}']) == 0
  rows = {r['attention']: r for r in json.loads(out.read_text())['rows']}
  # `none` adds the bias in scope; PFCA and SE add their statistics and rescale, forward and backward.
  assert 0 < rows['none']['scoped_operations'] < rows['pfca']['scoped_operations']
  for r in rows.values():
    assert len(r['step_s_rounds']) == 2 and all(t > 0 for t in r['timed_s_rounds'])
    assert all(0 < a <= t for a, t in zip(r['scoped_s_rounds'], r['timed_s_rounds']))
  assert 'own_share_median' not in rows['none']
  for name in ('pfca', 'se'):
    r = rows[name]
    assert r['own_share_rounds'] == pytest.approx(
        [(a - a0) / s0 for a, a0, s0 in zip(r['scoped_s_rounds'], rows['none']['scoped_s_rounds'],
                                             rows['none']['step_s_rounds'])])
  report = capsys.readouterr().out
  assert 'own work over none' in report and 'pfca against se: own work' in report
  with pytest.raises(RuntimeError, match='no perfetto trace'):
    step_profile.thunk_times(str(tmp_path / 'empty'), {'x'})


@pytest.mark.parametrize('args, message', [
    (['--benchmark=vgg'], "--benchmark='vgg': vgg; valid: resnet18"),
    (['--benchmark=cifar_resnet20,msrresnet_x4'], 'one benchmark a run'),
    (['--attentions=pfca,cbam'], "--attentions='pfca,cbam': cbam; valid: none, pfca"),
    (['--scope=('], "--scope='(' is not a regular expression"),
    (['--rounds=0'], '--rounds and --steps must be >= 1'),
    (['--side=16', '--benchmark=resnet50'], '--side=16 is below what resnet50 takes'),
])
def test_bad_arguments_fail_in_one_line_before_compiling(args, message, capsys):
  assert step_profile.main(args) == 2
  err = capsys.readouterr().err
  assert err.startswith('error: ') and message in err and err.count('\n') == 1


def test_the_report_pairs_attentions_round_by_round():
  def row(name, own=None):
    r = {'attention': name, 'step_s_rounds': [1.0] * 6, 'timed_s_rounds': [0.5] * 6, 'scoped_s_rounds': [0.1] * 6,
         'scoped_operations': 3, 'kinds_s': {'ynn_fusion': 0.25}}
    if own is not None:
      r.update(own_share_rounds=own, own_share_median=sorted(own)[3], own_share_ci95=(min(own), max(own)),
               step_paired_median=0.1, step_paired_ci95=None)
    return r

  rows = [row('none'), row('pfca', [0.01, 0.02, 0.03, 0.04, 0.05, 0.06]),
          row('se', [0.03, 0.03, 0.03, 0.03, 0.03, 0.03])]
  report = step_profile.format_report(rows, top=1)
  # Differences -2..+3 points: median +0.5 (the mean of the middle two), interval the extremes at 6 rounds.
  assert "pfca against se: own work +0.50% [-2.00%, +3.00%] of none's step, paired by round" in report
  assert report.splitlines()[2].endswith('+4.00% [+1.00%, +6.00%]; +10.00%')
  assert report.splitlines()[-1].split() == ['ynn_fusion', '250.0', '250.0', '250.0']
