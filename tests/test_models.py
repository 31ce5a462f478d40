import torch

from cifar_course.models import (
    LessonNet,
    LessonNetSequential,
    arch_name,
    build_model,
    copy_weights,
    count_parameters,
)


def test_output_shape_on_lecture_input():
    for model in (LessonNet(), LessonNetSequential()):
        assert model(torch.ones((64, 3, 32, 32))).shape == (64, 10)


def test_parameter_count():
    assert count_parameters(LessonNet()) == 145_578
    assert count_parameters(LessonNetSequential()) == 145_578


def test_both_forms_compute_the_same_function():
    torch.manual_seed(0)
    explicit, sequential = LessonNet(), LessonNetSequential()
    x = torch.rand(8, 3, 32, 32)
    assert not torch.allclose(explicit(x), sequential(x))  # different random weights
    copy_weights(explicit, sequential)
    torch.testing.assert_close(explicit(x), sequential(x))


def test_build_model_and_names():
    assert isinstance(build_model("lesson_net_sequential"), LessonNetSequential)
    assert arch_name(LessonNet()) == "lesson_net"
