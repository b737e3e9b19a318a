"""PyTorch parity of pfca_jax.convert: the reference networks and ours compute the same from converted weights.

References: torchvision's ResNets, the CIFAR ResNets of SimAM's reference code, BasicSR's MSRResNet, and
PFCA and SimAM from their formulas (all but torchvision's written out in tests/torch_definitions.py from
the references, under their module names, sharing no code with pfca_jax: not the converter's own copy in
pfca_jax.convert.torch_models, which a mistake shared with our models would pass). Every network
gets random weights and BN statistics (`torch_definitions.randomise`), runs in eval mode in float32 on
the same input (NCHW there, NHWC here), and must agree to max |ours - torch| / max |torch| <= 1e-4.
`pytest -s` prints each ratio, next to PyTorch's own float32 error against float64 for scale.

Also: PFCA and SimAM inserted on both sides, exact round trips in both directions, and the
converter's strictness. Skipped without PyTorch, which pfca_jax does not depend on.
"""

import copy
import functools
import os

import chex
import jax
import numpy as np
import pytest
from flax import traverse_util

torch = pytest.importorskip('torch', reason='PyTorch is not installed: no parity tests '
                            '(pip install -r requirements-torch.txt)')
torchvision = pytest.importorskip('torchvision', reason='torchvision is not installed: no parity tests '
                                  '(pip install torchvision)')
F = torch.nn.functional

import torch_definitions as td  # noqa: E402 -- imports torch, so only after the skips above.

from pfca_jax import models  # noqa: E402
from pfca_jax.convert import ConversionError, flax_to_torch, torch_to_flax  # noqa: E402

TOLERANCE = 1e-4
IMAGENET = ('resnet18', 'resnet34', 'resnet50', 'resnet101', 'resnet152')
CIFAR = ('cifar_resnet20', 'cifar_resnet32', 'cifar_resnet56', 'cifar_resnet110', 'cifar_resnet164')
# Both kinds of block, both stems, and the deepest network (cifar_resnet164: 54 blocks). The others
# differ from these only in how many blocks a stage has; PFCA_JAX_PARITY_ALL=1 tests every one
# (experiments/results/torch_parity.md gives the extra time).
TESTED = IMAGENET + CIFAR if os.environ.get('PFCA_JAX_PARITY_ALL') == '1' else (
    'resnet18', 'resnet50', 'cifar_resnet20', 'cifar_resnet164')
# Small MSRResNets for every scale, and BasicSR's default size at x4.
SMALL_SR = dict(num_feat=16, num_block=2)
DEFAULT_SR = dict(num_feat=64, num_block=16)


# ---------------------------------------------------------------------------------------------------
# Helpers.


def batch(shape, seed=0, uniform=False):
  """A float32 NCHW batch; non-square, so that a swapped H and W cannot go unnoticed."""
  rng = np.random.default_rng(seed)
  return (rng.uniform(size=shape) if uniform else rng.normal(size=shape)).astype(np.float32)


def input_shape(name):
  if name == 'msrresnet':
    return (2, 3, 12, 10)  # LR patches, as an SR model sees them.
  return (2, 3, 64, 48) if name in IMAGENET else (2, 3, 32, 24)


def torch_network(name, attention=None, seed=0, calibrated=True, **sr_options):
  """The reference for our `name`, randomised. `attention` (td.PFCA / td.SimAM) goes where SimAM's
  code (CIFAR) or our MSRResNet puts it; torchvision's ResNets get PFCA through `td.insert_pfca`.
  `calibrated=False` skips the pass that sets the BN statistics (td.randomise), for tests that run nothing."""
  if name in IMAGENET:
    assert attention is None
    model = getattr(torchvision.models, name)(weights=None)
  elif name in CIFAR:
    model = td.cifar_resnet(name, num_classes=100, attention=attention)
  else:
    model = td.MSRResNet(num_feat=sr_options['num_feat'], num_block=sr_options['num_block'],
                         upscale=sr_options['scale'], attention=attention)
    # Smaller convolutions than He's, so that the residual body and the bilinear skip both show in
    # the output (at gain 1 sixteen blocks grow the body's output ~1e4-fold).
    return td.randomise(model, seed, conv_gain=0.5)
  # BN statistics measured on a batch of the size tested (see td.randomise), not the tested batch.
  calibration = torch.from_numpy(batch(input_shape(name), seed=seed + 100)) if calibrated else None
  return td.randomise(model, seed, calibration=calibration)


def run_torch(model, x):
  with torch.no_grad():
    return model(torch.from_numpy(x)).numpy()


def run_float64(model, x):
  """The reference in float64: the error of PyTorch's own float32 run, for scale in the printout."""
  with torch.no_grad():
    return copy.deepcopy(model).double()(torch.from_numpy(x).double()).numpy()


def run_ours(name, variables, x, **create_options):
  model = models.create(name, **create_options)
  y = np.asarray(jax.jit(functools.partial(model.apply, train=False))(variables, x.transpose(0, 2, 3, 1)))
  return y.transpose(0, 3, 1, 2) if y.ndim == 4 else y


def relative_error(ours, reference):
  return float(np.max(np.abs(np.asarray(ours, np.float64) - reference)) / np.max(np.abs(reference)))


def assert_parity(label, torch_model, name, x, **create_options):
  """Converts torch_model's state dict for models.create(name, **create_options), runs both on x."""
  variables = torch_to_flax(torch_model.state_dict(), name, **create_options)
  reference = run_torch(torch_model, x)
  ours = run_ours(name, variables, x, **create_options)
  assert ours.shape == reference.shape and ours.dtype == np.float32
  error = relative_error(ours, reference)
  baseline = relative_error(reference, run_float64(torch_model, x))
  print(f'\n{label}: max|ours - torch| / max|torch| = {error:.2e}  (torch float32 vs float64: {baseline:.2e})')
  assert error <= TOLERANCE, f'{label}: relative difference {error:.2e} > {TOLERANCE:.0e}'
  return reference


def sr_options(scale, size):
  return dict(scale=scale, **size)


def plain_state(name, **sr):
  return torch_network(name, calibrated=False, **sr).state_dict()


# ---------------------------------------------------------------------------------------------------
# The plain networks.


@pytest.mark.parametrize('name', TESTED)
def test_resnet_parity(name):
  model = torch_network(name)
  logits = assert_parity(name, model, name, batch(input_shape(name)))
  # The two images must give different logits: a network whose output ignores its input proves nothing.
  assert relative_error(logits[0], logits[1]) > 0.03


@pytest.mark.parametrize('scale, size', [(2, SMALL_SR), (3, SMALL_SR), (4, SMALL_SR), (4, DEFAULT_SR)],
                         ids=['x2', 'x3', 'x4', 'x4-default'])
def test_msrresnet_parity(scale, size):
  options = sr_options(scale, size)
  model = torch_network('msrresnet', **options)
  x = batch(input_shape('msrresnet'), uniform=True)
  label = f'msrresnet x{scale} ({size["num_feat"]} features, {size["num_block"]} blocks)'
  out = assert_parity(label, model, 'msrresnet', x, **options)
  # Both the learned branch and the bilinear skip must be visible, or parity would not test them both.
  skip = F.interpolate(torch.from_numpy(x), scale_factor=scale, mode='bilinear', align_corners=False).numpy()
  assert 0.2 < np.std(out - skip) / np.std(skip) < 5


def test_reference_layers_match_too():
  # Our default layers are models/fast/ (test_resnet_parity); those written as defined must match as well.
  model = torch_network('resnet50')
  assert_parity('resnet50 attention_impl=reference', model, 'resnet50', batch(input_shape('resnet50')),
                attention_impl='reference')


# ---------------------------------------------------------------------------------------------------
# Parameter-free attentions inserted on both sides, from the same plain weights.


@pytest.mark.parametrize('attention_impl', ['fast', 'reference'])
def test_pfca_in_torchvision_resnet18(attention_impl):
  model = torch_network('resnet18')
  x = batch(input_shape('resnet18'))
  plain = run_torch(model, x)
  names = list(model.state_dict())
  handles = td.insert_pfca(model)
  assert list(model.state_dict()) == names  # Hooks add no names: the plain state dict is converted.
  with_pfca = assert_parity(f'resnet18 + PFCA ({attention_impl})', model, 'resnet18', x, attention='pfca',
                            attention_impl=attention_impl)
  for handle in handles:
    handle.remove()
  # PFCA must change what the network computes, or the comparison would not test it.
  assert relative_error(with_pfca, plain) > 1e-2


@pytest.mark.parametrize('name, attention, attention_impl', [
    ('cifar_resnet20', 'pfca', 'fast'), ('cifar_resnet20', 'pfca', 'reference'),
    ('cifar_resnet20', 'simam', 'fast'), ('cifar_resnet20', 'simam', 'reference'),
    ('cifar_resnet164', 'pfca', 'fast')])
def test_attention_in_simam_cifar_resnet(name, attention, attention_impl):
  """SimAM's code wraps a module in nn.Sequential(module, attention): the state dict's names change
  (`layer1.0.bn2.0.weight`), and the converter reads them as the plain ones."""
  model = torch_network(name, attention={'pfca': td.PFCA, 'simam': td.SimAM}[attention])
  wrapped = {'pfca': 'bn3' if name == 'cifar_resnet164' else 'bn2', 'simam': 'conv2'}[attention]
  assert f'layer1.0.{wrapped}.0.weight' in model.state_dict()
  x = batch(input_shape(name))
  with_attention = assert_parity(f'{name} + {attention} (SimAM-wrapped, {attention_impl})', model, name, x,
                                 attention=attention, attention_impl=attention_impl)
  # The same weights without the attention compute something else.
  plain = td.cifar_resnet(name).eval()
  plain.load_state_dict({k.replace(f'.{wrapped}.0.', f'.{wrapped}.'): v for k, v in model.state_dict().items()})
  assert relative_error(with_attention, run_torch(plain, x)) > 1e-2


@pytest.mark.parametrize('attention', ['pfca', 'simam'])
def test_sequential_wrapped_bottleneck_reads_as_plain(attention):
  # SimAM in a bottleneck wraps conv2, anything else bn3; the names are read as the plain network's.
  # (The forward pass of the bottleneck with PFCA is compared above; here the conversion alone, cheaply.)
  wrapped = td.cifar_resnet('cifar_resnet164', attention={'pfca': td.PFCA, 'simam': td.SimAM}[attention])
  td.randomise(wrapped)
  target = 'bn3' if attention == 'pfca' else 'conv2'
  plain = {k.replace(f'.{target}.0.', f'.{target}.'): v for k, v in wrapped.state_dict().items()}
  assert plain.keys() != wrapped.state_dict().keys()
  chex.assert_trees_all_equal(torch_to_flax(wrapped.state_dict(), 'cifar_resnet164', attention=attention),
                              torch_to_flax(plain, 'cifar_resnet164'))


@pytest.mark.parametrize('attention_impl', ['fast', 'reference'])
@pytest.mark.parametrize('scale', [2, 4])
def test_pfca_in_msrresnet(scale, attention_impl):
  # Our attention='pfca' sits after each block's conv2, before the identity add, as in td.ResidualBlockNoBN.
  options = sr_options(scale, SMALL_SR)
  model = torch_network('msrresnet', attention=td.PFCA, **options)
  assert_parity(f'msrresnet x{scale} + PFCA ({attention_impl})', model, 'msrresnet',
                batch(input_shape('msrresnet'), uniform=True), attention='pfca', attention_impl=attention_impl,
                **options)


# ---------------------------------------------------------------------------------------------------
# Round trips: exact, both ways.

ROUND_TRIPS = [('resnet18', {}), ('resnet50', {}), ('cifar_resnet20', {}), ('cifar_resnet164', {}),
               ('msrresnet', sr_options(2, SMALL_SR)), ('msrresnet', sr_options(3, SMALL_SR)),
               ('msrresnet', sr_options(4, SMALL_SR))]
ROUND_TRIP_IDS = ['resnet18', 'resnet50', 'cifar_resnet20', 'cifar_resnet164', 'msrresnet_x2', 'msrresnet_x3',
                  'msrresnet_x4']


@pytest.mark.parametrize('name, options', ROUND_TRIPS, ids=ROUND_TRIP_IDS)
def test_torch_round_trip_is_exact(name, options):
  original = plain_state(name, **options)
  exported = flax_to_torch(torch_to_flax(original, name, **options), name, **options)
  # Same names in the same order as the reference's own state dict, float32 except the BN counters.
  assert list(exported) == list(original)
  fresh = torch_network(name, seed=1, calibrated=False, **options)  # Other weights: loading must overwrite them.
  fresh.load_state_dict({k: torch.from_numpy(v) for k, v in exported.items()}, strict=True)
  for key, value in fresh.state_dict().items():
    if key.endswith('num_batches_tracked'):
      assert value.item() == 0 and original[key].item() == 7, key  # Not converted: written as 0.
    else:
      assert value.dtype == torch.float32 and torch.equal(value, original[key]), key


@pytest.mark.parametrize('name, options', ROUND_TRIPS, ids=ROUND_TRIP_IDS)
def test_flax_round_trip_is_exact(name, options):
  model = models.create(name, **options)
  shape = (1, 8, 8, 3) if name == 'msrresnet' else (1, 32, 32, 3)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), np.zeros(shape, np.float32)))
  # Random values in every array (an init's BN scales are all 1, its biases and means 0: a swap
  # between them would not show).
  leaves, treedef = jax.tree_util.tree_flatten(dict(shapes))
  rng = np.random.default_rng(0)
  variables = jax.tree_util.tree_unflatten(treedef, [rng.normal(size=v.shape).astype(np.float32) for v in leaves])
  back = torch_to_flax(flax_to_torch(variables, name, **options), name, **options)
  chex.assert_trees_all_equal(back, variables)
  chex.assert_trees_all_equal_dtypes(back, variables)


def test_exported_sequential_wrapped_weights_load_into_the_plain_definition():
  # flax_to_torch writes plain names: a SimAM-wrapped network's weights come back for the plain network.
  model = torch_network('cifar_resnet20', attention=td.PFCA)
  exported = flax_to_torch(torch_to_flax(model.state_dict(), 'cifar_resnet20', attention='pfca'),
                           'cifar_resnet20', attention='pfca')
  plain = td.cifar_resnet('cifar_resnet20')
  plain.load_state_dict({k: torch.from_numpy(v) for k, v in exported.items()}, strict=True)
  assert torch.equal(plain.layer1[0].bn2.weight, model.layer1[0].bn2[0].weight)


# ---------------------------------------------------------------------------------------------------
# Strictness: the first missing, unexpected or misshapen array, named in one line.


def conversion_error(state, name, **options):
  with pytest.raises(ConversionError) as info:
    torch_to_flax(state, name, **options)
  message = str(info.value)
  assert '\n' not in message
  return message


@pytest.fixture(scope='module')
def resnet18_state():
  return plain_state('resnet18')


def test_missing_key_is_named(resnet18_state):
  state = dict(resnet18_state)
  del state['layer3.1.bn1.running_var']
  assert 'layer3.1.bn1.running_var' in conversion_error(state, 'resnet18')


def test_unexpected_key_is_named(resnet18_state):
  state = dict(resnet18_state, **{'layer2.0.extra.weight': torch.zeros(3)})
  assert 'layer2.0.extra.weight' in conversion_error(state, 'resnet18')


def test_misshapen_array_is_named(resnet18_state):
  # A 3x3 kernel stored the other way round (OIHW -> IOHW) has a different shape in layer2's first conv.
  state = dict(resnet18_state)
  state['layer2.0.conv1.weight'] = state['layer2.0.conv1.weight'].transpose(0, 1)
  message = conversion_error(state, 'resnet18')
  assert 'layer2.0.conv1.weight' in message and '(64, 128, 3, 3)' in message


def test_other_class_count_is_named(resnet18_state):
  message = conversion_error(resnet18_state, 'resnet18', num_classes=10)
  assert 'fc.weight' in message and 'num_classes=1000' in message


def test_another_resnet_is_recognised(resnet18_state):
  # resnet18 weights asked as resnet50: the message says what the file holds.
  message = conversion_error(resnet18_state, 'resnet50')
  assert 'resnet50' in message and 'resnet18' in message


def test_msrresnet_of_another_scale_is_refused():
  state = plain_state('msrresnet', **sr_options(2, SMALL_SR))
  message = conversion_error(state, 'msrresnet', **sr_options(4, SMALL_SR))
  assert 'scale=2' in message  # x2's upconv1 has x4's shape; x4's upconv2 is what is missing.


def test_flax_to_torch_is_strict():
  variables = torch_to_flax(plain_state('cifar_resnet20'), 'cifar_resnet20')
  del variables['batch_stats']['layer2']['1']['bn2']['var']
  with pytest.raises(ConversionError, match='layer2/1/bn2/var'):
    flax_to_torch(variables, 'cifar_resnet20')


def test_data_parallel_prefix_is_dropped(resnet18_state):
  # nn.DataParallel saves every name under `module.`.
  prefixed = {f'module.{k}': v for k, v in resnet18_state.items()}
  chex.assert_trees_all_equal(torch_to_flax(prefixed, 'resnet18'), torch_to_flax(resnet18_state, 'resnet18'))


def test_half_precision_weights_load_as_float32(resnet18_state):
  half = {k: v.half() if v.is_floating_point() else v for k, v in resnet18_state.items()}
  variables = torch_to_flax(half, 'resnet18')
  chex.assert_trees_all_equal_dtypes(variables, torch_to_flax(resnet18_state, 'resnet18'))
  kernel = variables['params']['layer1']['0']['conv1']['kernel']
  assert kernel.dtype == np.float32
  np.testing.assert_array_equal(kernel, half['layer1.0.conv1.weight'].float().numpy().transpose(2, 3, 1, 0))


# ---------------------------------------------------------------------------------------------------
# Attentions with parameters: in from a plain checkpoint with a warning, never out.


def test_se_loads_from_a_plain_checkpoint_with_a_warning():
  # cifar_resnet20 rather than an ImageNet ResNet: torch_to_flax initialises the whole network to get
  # SE's parameters, which is most of this test's time.
  name, state = 'cifar_resnet20', plain_state('cifar_resnet20')
  with pytest.warns(UserWarning, match='se attention has'):
    variables = torch_to_flax(state, name, attention='se')
  # Every array of the network, SE's initialised as models.create does.
  model = models.create(name, attention='se')
  expected = jax.eval_shape(lambda: model.init(jax.random.key(0), np.zeros((1, 32, 32, 3), np.float32)))
  chex.assert_trees_all_equal_shapes_and_dtypes(variables, dict(expected))
  se = variables['params']['layer2']['1']['attention']  # 32 channels, reduction 16.
  chex.assert_shape([se['fc1']['kernel'], se['fc1']['bias'], se['fc2']['kernel'], se['fc2']['bias']],
                    [(32, 2), (2,), (2, 32), (32,)])
  # Everything else is the plain conversion.
  without_se = {path: value for path, value in traverse_util.flatten_dict(variables).items() if 'attention' not in path}
  chex.assert_trees_all_equal(without_se, traverse_util.flatten_dict(torch_to_flax(state, name)))
  with pytest.raises(ConversionError, match='se attention'):
    flax_to_torch(variables, name, attention='se')


@pytest.mark.parametrize('attention', ['se', 'eca'])
def test_attention_parameters_cannot_be_exported(attention):
  # The references have no place for them: refused before the variables are even looked at.
  with pytest.raises(ConversionError, match=f'{attention} attention'):
    flax_to_torch({}, 'resnet18', attention=attention)
