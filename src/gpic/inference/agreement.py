"""Image-text agreement: the caption stage's second opinion. A model of another family than the
captioner (SigLIP, a dual encoder trained with a sigmoid loss) scores how well each caption
matches its image, so a caption is not vouched for only by the model that wrote it. The score
is the cosine similarity of the L2-normalised image and text embeddings. Texts longer than the
text tower's limit (SigLIP: 64 tokens) are truncated: only their first tokens are scored."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from gpic.identity import weights_revision
from gpic.inference import checkpoint_name, quiet_progress_bars

if TYPE_CHECKING:
    from PIL import Image


def _embeds(features):
    """get_*_features return a tensor in transformers 4.x, a BaseModelOutputWithPooling in 5.x."""
    import torch

    return features if torch.is_tensor(features) else features.pooler_output


class AgreementScorer:
    """A local dual-encoder checkpoint (transformers `AutoModel` + `AutoProcessor`, safetensors
    only) and its identity: the folder name (the repo id in the hub cache layout) and the hash of
    its weight files (gpic.identity.weights_revision)."""

    def __init__(self, path: str | Path, device: str = "cpu") -> None:
        import torch
        from transformers import AutoModel, AutoProcessor

        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"agreement model folder not found: {path}")
        if not (path / "config.json").is_file():
            raise ValueError(f"no config.json in agreement model folder {path}")
        if not list(path.glob("*.safetensors")):  # a pickled checkpoint is refused, never unpickled
            raise ValueError(f"no *.safetensors weights in agreement model folder {path}")
        with quiet_progress_bars():
            self.model = AutoModel.from_pretrained(path, dtype=torch.float32, local_files_only=True,
                                                   use_safetensors=True).eval().to(device)
            if not all(hasattr(self.model, f) for f in ("get_text_features", "get_image_features")):
                raise ValueError(f"{path} holds a {type(self.model).__name__}, not a dual encoder")
            self.processor = AutoProcessor.from_pretrained(path, local_files_only=True)
        self.device = device
        self.model_id = checkpoint_name(path)
        self.revision = weights_revision(path)
        positions = self.model.config.text_config.max_position_embeddings
        self.max_text_tokens = min(self.processor.tokenizer.model_max_length, positions)

    def score(self, images: list[Image.Image], captions: list[list[str]]) -> list[list[float]]:
        """Cosine similarity of each image with each of its own captions (captions[i] belongs to
        images[i]); an empty (or blank) caption scores nan. One vision forward for all images, one text
        forward for all non-empty captions, padded to the text tower's length as SigLIP was
        trained, and without an attention mask: SigLIP's text tower was trained attending to its
        padding (which is its end-of-text token) and pools the last position."""
        import torch

        if len(images) != len(captions):
            raise ValueError(f"{len(images)} images but {len(captions)} caption lists")
        pairs = [(i, text) for i, texts in enumerate(captions) for text in texts if text.strip()]
        if not pairs:
            return [[math.nan] * len(texts) for texts in captions]
        with torch.inference_mode():
            pixels = self.processor.image_processor([im.convert("RGB") for im in images], return_tensors="pt")
            image = _embeds(self.model.get_image_features(pixel_values=pixels["pixel_values"].to(self.device)))
            tokens = self.processor.tokenizer([text for _, text in pairs], padding="max_length", truncation=True,
                                              max_length=self.max_text_tokens, return_tensors="pt")
            text = _embeds(self.model.get_text_features(input_ids=tokens["input_ids"].to(self.device)))
            image = torch.nn.functional.normalize(image.float(), dim=-1)
            text = torch.nn.functional.normalize(text.float(), dim=-1)
            sims = (text * image[[i for i, _ in pairs]]).sum(-1).tolist()
        it = iter(sims)
        return [[next(it) if text.strip() else math.nan for text in texts] for texts in captions]
