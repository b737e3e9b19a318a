"""Real photographs that ship inside scikit-image, as a prepared-on-demand TFDS super-resolution dataset.

Like DIV2K's bicubic tracks, each example is an (LR, HR) pair: HR is the photo mod-cropped to a
multiple of the scale, LR its MATLAB-bicubic downscale (pfca_jax.imresize, docs/training.md, "Super-resolution evaluation").
The photos are split by content, never by crop: training sees six photos and evaluation three others
(one of them greyscale, repeated to RGB), so the validation scores are on scenes the model never saw.
`SkimagePhotos` writes ordinary TFRecords into the TFDS data_dir the first time a run asks for them
(a few seconds, no network); the DIV2K pipeline then reads them unchanged, as `div2k` examples with
an extra 'name' feature.
"""

import numpy as np
import tensorflow_datasets as tfds

from pfca_jax.data.sr_folders import mod_crop

NAME = 'skimage_photos'
SCALES = (2, 3, 4)
# skimage.data loaders, by split. All load from files inside the scikit-image wheel.
SPLITS = {
    'train': ('astronaut', 'coffee', 'chelsea', 'hubble_deep_field', 'immunohistochemistry', 'retina'),
    'validation': ('rocket', 'stereo_motorcycle', 'camera'),
}


def load_photo(name: str) -> np.ndarray:
  """skimage.data's photo `name` as uint8 HxWx3 (greyscale repeated; the stereo pair's left image)."""
  import skimage.data
  image = getattr(skimage.data, name)()
  if isinstance(image, tuple):  # stereo_motorcycle: (left, right, disparity).
    image = image[0]
  if image.ndim == 2:
    image = np.repeat(image[:, :, None], 3, axis=2)
  return np.ascontiguousarray(image[:, :, :3].astype(np.uint8))


class SkimagePhotos(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """TFDS builder with configs bicubic_x2/x3/x4: {'lr', 'hr': uint8 images, 'name': the photo's name}."""
  name = NAME
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Six training and three validation photos of skimage.data.'}
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=f'bicubic_x{s}', description=f'MATLAB bicubic x{s} LR')
                     for s in SCALES]

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description='Photographs of skimage.data with MATLAB-bicubic low-resolution versions.',
        features=tfds.features.FeaturesDict({
            'lr': tfds.features.Image(shape=(None, None, 3)),
            'hr': tfds.features.Image(shape=(None, None, 3)),
            'name': tfds.features.Text(),
        }),
        supervised_keys=('lr', 'hr'),
        homepage='https://scikit-image.org/docs/stable/api/skimage.data.html',
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # The photos are inside the installed scikit-image: nothing to download.
    return {split: self._generate_examples(names) for split, names in SPLITS.items()}

  def _generate_examples(self, names):
    from pfca_jax.imresize import imresize
    scale = int(self.builder_config.name.removeprefix('bicubic_x'))
    for name in names:
      hr = mod_crop(load_photo(name), scale)
      lr = imresize(hr, 1.0 / scale)
      yield name, {'lr': lr, 'hr': hr, 'name': name}
