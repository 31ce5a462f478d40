"""Lesson 05's exercise checks against answers a learner writes: each common mistake gets
``Not yet`` with the message that names it, and right answers written differently from the
reference solution get ``Correct``."""

import pytest
from exercise_cases import alternative_is_correct, mistake_gets_its_message

# (lesson, exercise, wrong answer, what the feedback must say)
MISTAKES = [
    (
        "05",
        "q1",
        """
        def preprocess(image):
            to_input = transforms.Compose([transforms.Resize((32, 32)), transforms.ToTensor()])
            return to_input(image).unsqueeze(0)
        """,
        "for an RGBA photo (a PNG with transparency) your tensor has shape [1, 4, 32, 32]; "
        "expected [1, 3, 32, 32]. Convert the image to RGB first",
    ),
    (
        "05",
        "q1",
        """
        def preprocess(image):
            to_input = transforms.Compose([transforms.Resize((32, 32)), transforms.ToTensor()])
            return to_input(image.convert('RGB'))
        """,
        "Add the batch dimension with .unsqueeze(0)",
    ),
    (
        "05",
        "q1",
        """
        def preprocess(image):
            to_input = transforms.Compose([transforms.Resize(32), transforms.ToTensor()])
            return to_input(image.convert('RGB')).unsqueeze(0)
        """,
        "Resize(32) only sets the shorter side",
    ),
    (
        "05",
        "q1",
        """
        def preprocess(image):
            to_input = transforms.Compose([transforms.Resize((32, 32)), transforms.PILToTensor()])
            return to_input(image.convert('RGB')).unsqueeze(0).float()
        """,
        "not 0..255",
    ),
    (
        "05",
        "q2",
        """
        def top_class(logits, class_names):
            return class_names[logits.argmax(0)[0]], logits.softmax(1).max().item()
        """,
        "argmax over dim 0 of a [1, 10] tensor",
    ),
    (
        "05",
        "q2",
        """
        def top_class(logits, class_names):
            return class_names[logits.argmax()], logits.max().item()
        """,
        "that is its logit",
    ),
    (
        "05",
        "q2",
        """
        def top_class(logits, class_names):
            return class_names[logits.argmax()], logits.softmax(0).max().item()
        """,
        "the softmax ran over dim 0",
    ),
    (
        "05",
        "q3",
        """
        def classify(model, image, preprocess):
            with torch.no_grad():
                return top_class(model(preprocess(image)), CLASSES)
        """,
        "the model ran in training mode",
    ),
    (
        "05",
        "q3",
        """
        def classify(model, image, preprocess):
            model.eval()
            return top_class(model(preprocess(image)), CLASSES)
        """,
        "autograd recorded the forward pass",
    ),
    (
        "05",
        "q1",
        """
        import numpy as np
        def preprocess(image):
            pixels = np.asarray(image.convert("RGB").resize((32, 32))) / 255.0
            return torch.from_numpy(pixels).permute(2, 0, 1).unsqueeze(0)
        """,
        "your tensor holds torch.float64",
    ),
    (
        "05",
        "q1",
        """
        def preprocess(image):
            to_input = transforms.Compose([transforms.Resize((32, 32)), transforms.ToTensor()])
            return to_input(image.convert("RGB")).permute(1, 2, 0).unsqueeze(0)
        """,
        "The channels go first",
    ),
    (
        "05",
        "q1",
        """
        from torchvision import transforms
        def preprocess(image):
            return transforms.Compose([
                transforms.Resize((32, 32)), transforms.ToTensor(),
                transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
            ])(image.convert("RGB")).unsqueeze(0)
        """,
        "without Normalize: leave Normalize out",
    ),
    (
        "05",
        "q3",
        """
        def classify(model, image, preprocess):
            model.training = False  # the layers inside stay in training mode
            with torch.no_grad():
                logits = model(preprocess(image))
            return top_class(logits, CLASSES)
        """,
        "the model ran in training mode",
    ),
    # issue 31: a classify that ignores the image, or preprocesses it its own way
    (
        "05",
        "q3",
        """
        def classify(model, image, preprocess):
            model.eval()
            with torch.no_grad():
                logits = model(torch.zeros(1, 3, 32, 32))
            return top_class(logits, CLASSES)
        """,
        "for the ship photo you return",
    ),
    (
        "05",
        "q3",
        """
        def classify(model, image, preprocess):
            model.eval()
            gray = transforms.Compose(
                [transforms.Grayscale(3), transforms.Resize((32, 32)), transforms.ToTensor()]
            )
            with torch.no_grad():
                logits = model(gray(image).unsqueeze(0))
            return top_class(logits, CLASSES)
        """,
        "Does classify run the model on preprocess(image)",
    ),
    (
        "05",
        "q2",
        """
        def top_class(logits, class_names):
            probabilities = logits.softmax(dim=1)[0]
            index = int(probabilities.argmax())
            return CLASSES[index], probabilities[index].item()
        """,
        "take the name from class_names, the argument",
    ),
    (
        "05",
        "q1",
        """
        from PIL import Image

        to_input = transforms.Compose([transforms.Resize((32, 32)), transforms.ToTensor()])

        def preprocess(image):
            if image.mode == "RGBA":
                background = Image.new("RGB", image.size, (255, 255, 255))
                background.paste(image, mask=image.split()[3])
                image = background
            return to_input(image.convert("RGB")).unsqueeze(0)
        """,
        "do not blend the image onto a background",
    ),
]

# (lesson, a right answer written differently)
ALTERNATIVES = [
    # issue 31: a classify that ignores the image, or preprocesses it its own way
    (
        "05",
        """
        def classify(model, image, preprocess):
            model = model.eval()
            with torch.inference_mode():
                probabilities = model(preprocess(image)).softmax(dim=1)
            best = probabilities.argmax(dim=1).item()
            return CLASSES[best], float(probabilities[0, best])
        """,
    ),
]


@pytest.mark.parametrize(("lesson", "number", "answer", "expected"), MISTAKES)
def test_each_common_mistake_gets_its_own_message(lesson, number, answer, expected):
    mistake_gets_its_message(lesson, number, answer, expected)


@pytest.mark.parametrize(("lesson", "answer"), ALTERNATIVES)
def test_right_answers_written_differently_are_correct(lesson, answer):
    alternative_is_correct(lesson, answer)
