"""JobOptions behaves as Beam's PipelineOptions, making each view once."""

import pickle

from apache_beam.options.pipeline_options import DirectOptions
from apache_beam.options.pipeline_options import GoogleCloudOptions
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.options.pipeline_options import SetupOptions
from apache_beam.options.pipeline_options import StandardOptions
from apache_beam.options.pipeline_options import TypeOptions

from pipeline.beam_options import JobOptions

FLAGS = [
    '--runner=DirectRunner', '--direct_num_workers=2',
    '--no_pipeline_type_check', '--job_name=x', '--experiments=a',
    '--experiments=b'
]


def test_one_view_per_class_with_beams_values():
  options, beams = JobOptions(FLAGS), PipelineOptions(FLAGS)
  for cls in (StandardOptions, DirectOptions, TypeOptions, SetupOptions,
              GoogleCloudOptions):
    view = options.view_as(cls)
    assert options.view_as(cls) is view
    assert isinstance(view, cls)
    assert view.get_all_options() == beams.view_as(cls).get_all_options()
  assert options.view_as(TypeOptions).pipeline_type_check is False
  assert options.get_all_options() == beams.get_all_options()


def test_a_value_set_through_a_view_shows_everywhere():
  options = JobOptions(FLAGS)
  options.view_as(SetupOptions).pickle_library = 'cloudpickle'
  options.view_as(StandardOptions).runner = 'FlinkRunner'
  assert options.view_as(SetupOptions).pickle_library == 'cloudpickle'
  assert options.get_all_options()['pickle_library'] == 'cloudpickle'
  assert options.get_all_options()['runner'] == 'FlinkRunner'
  # A view of a view is Beam's own, and sees the same values.
  assert options.view_as(DirectOptions).view_as(
      StandardOptions).runner == 'FlinkRunner'


def test_pickles_without_its_views():
  options = JobOptions(FLAGS)
  options.view_as(SetupOptions).pickle_library = 'cloudpickle'
  options.view_as(DirectOptions)
  again = pickle.loads(pickle.dumps(options))
  assert '_views' not in again.__dict__
  assert again.get_all_options() == options.get_all_options()
  assert again.view_as(SetupOptions).pickle_library == 'cloudpickle'
  assert again.view_as(DirectOptions) is again.view_as(DirectOptions)
  assert '_views' in options.__dict__  # the original keeps its views
