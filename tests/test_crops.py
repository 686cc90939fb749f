"""Face crops: box -> 3:4 region -> affine warp, and the paste back into the image."""
import math

import pytest
import torch
import torch.nn.functional as F

import qanet_d2  # noqa: F401
from qanet_d2.layers.crops import (
    boxes_to_affines,
    crop_images,
    crop_labels,
    crop_windows,
    expand_box_to_aspect,
    invert_affines,
    normalize_image,
)

from paste_reference import paste_to_image


def _label_image(height=60, width=80):
    lab = torch.zeros(1, height, width, dtype=torch.long)
    lab[0, 10:30, 20:50] = 3
    lab[0, 15:25, 30:40] = 5
    lab[0, 40:58, 60:78] = 2
    return lab


def test_expand_box_to_aspect_keeps_centre_and_grows_shorter_side():
    boxes = torch.tensor([[10.0, 20.0, 50.0, 40.0], [0.0, 0.0, 30.0, 80.0]])  # wide 40x20; tall 30x80
    out = expand_box_to_aspect(boxes, aspect=0.75, expand=1.25)
    w, h = out[:, 2] - out[:, 0], out[:, 3] - out[:, 1]
    torch.testing.assert_close(w / h, torch.full((2,), 0.75))
    torch.testing.assert_close((out[:, 0] + out[:, 2]) / 2, (boxes[:, 0] + boxes[:, 2]) / 2)
    torch.testing.assert_close((out[:, 1] + out[:, 3]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2)
    # wide box: width kept (40), height grown to 40/0.75, then both x1.25
    torch.testing.assert_close(w[0], torch.tensor(40 * 1.25))
    torch.testing.assert_close(h[0], torch.tensor(40 / 0.75 * 1.25))
    # tall box: height kept (80), width grown to 60, then x1.25
    torch.testing.assert_close(h[1], torch.tensor(100.0))
    torch.testing.assert_close(w[1], torch.tensor(75.0))


def test_affine_maps_box_corners_and_pixel_centres():
    box = torch.tensor([[10.0, -13.0, 58.0, 51.0]])  # 48 x 64 region, 3:4
    a, inv = boxes_to_affines(box, (128, 96))
    corners = torch.tensor([[0.0, 0.0, 1.0], [96.0, 128.0, 1.0]]).T
    torch.testing.assert_close((a[0] @ corners).T, torch.tensor([[10.0, -13.0], [58.0, 51.0]]))
    # the inverse maps back, and crop pixel centre (0.5, 0.5) is half an image-pixel step in
    pt = torch.tensor([10.25, -12.75, 1.0])
    torch.testing.assert_close(inv[0] @ pt, torch.tensor([0.5, 0.5]))
    torch.testing.assert_close(invert_affines(inv), a)


@pytest.mark.parametrize("rotation", [None, 30.0, -75.0])
@pytest.mark.parametrize("flip", [False, True])
def test_crop_then_paste_reproduces_the_region(rotation, flip):
    lab = _label_image()
    region = expand_box_to_aspect(torch.tensor([[15.0, 5.0, 55.0, 35.0]]), 0.75, 1.25)
    rot = None if rotation is None else torch.tensor([rotation])
    a, _ = boxes_to_affines(region, (128, 96), rotation=rot, flip=torch.tensor([flip]))
    crop = crop_labels(lab, torch.tensor([0]), a, (128, 96))
    onehot = F.one_hot(crop.clamp(max=5), 6).permute(0, 3, 1, 2).float()
    pasted, inside = paste_to_image(onehot, a, lab.shape[-2:], mode="nearest")
    back = pasted.argmax(1)
    assert inside.sum() > 1000
    # crops are ~2.5x finer than the image, so nearest sampling both ways is exact
    assert ((back != lab) & inside).sum() == 0
    # bilinear probabilities agree except within a pixel of label edges
    pasted_bl, _ = paste_to_image(onehot, a, lab.shape[-2:], mode="bilinear")
    wrong = (pasted_bl.argmax(1) != lab) & inside
    edges = F.max_pool2d((lab != F.pad(lab, (1, 0, 1, 0))[:, :-1, :-1]).float()[None], 3, 1, 1)[0] > 0
    edges |= F.max_pool2d((lab != F.pad(lab, (0, 1, 0, 1))[:, 1:, 1:]).float()[None], 3, 1, 1)[0] > 0
    assert (wrong & ~edges).sum() == 0


def test_flipped_crop_is_the_mirrored_crop_and_images_match_labels():
    torch.manual_seed(0)
    images = torch.randn(2, 3, 50, 70)
    region = torch.tensor([[5.0, 2.0, 41.0, 50.0], [20.0, 0.0, 56.0, 48.0]])
    batch_idx = torch.tensor([1, 0])
    a, _ = boxes_to_affines(region, (64, 48))
    af, _ = boxes_to_affines(region, (64, 48), flip=torch.tensor([True, True]))
    crops = crop_images(images, batch_idx, a, (64, 48))
    torch.testing.assert_close(crop_images(images, batch_idx, af, (64, 48)), crops.flip(-1), atol=1e-4, rtol=0)
    # crop_images picks the right image of the batch for each crop
    torch.testing.assert_close(crops[0:1], crop_images(images[1:2], torch.tensor([0]), a[0:1], (64, 48)))


def test_identity_crop_and_outside_is_ignore():
    images = torch.arange(2 * 12 * 16, dtype=torch.float32).reshape(1, 2, 12, 16)
    a, _ = boxes_to_affines(torch.tensor([[0.0, 0.0, 16.0, 12.0]]), (12, 16))
    torch.testing.assert_close(crop_images(images, torch.tensor([0]), a, (12, 16)), images, atol=1e-3, rtol=0)
    lab = torch.ones(1, 12, 16, dtype=torch.long)
    a2, _ = boxes_to_affines(torch.tensor([[-8.0, 0.0, 8.0, 12.0]]), (12, 16))  # left half outside
    out = crop_labels(lab, torch.tensor([0]), a2, (12, 16))
    assert (out[0, :, :8] == 255).all() and (out[0, :, 8:] == 1).all()


def test_rotation_turns_the_content():
    # A bright column right of the centre (x in [28, 32)). A +90 degree crop samples the image
    # rotated clockwise, so the column shows as a row above the crop centre (rows 8..11).
    img = torch.zeros(1, 1, 40, 40)
    img[0, 0, :, 28:32] = 1.0
    a, _ = boxes_to_affines(torch.tensor([[0.0, 0.0, 40.0, 40.0]]), (40, 40), rotation=torch.tensor([90.0]))
    crop = crop_images(img, torch.tensor([0]), a, (40, 40))[0, 0]
    rows = crop.mean(dim=1)
    assert rows.max() > 0.9 and crop.mean(dim=0).max() < 0.2
    assert 8 <= int(rows.argmax()) <= 11


def test_windows_and_scaled_affines_paste_into_the_original_frame():
    # Crop made on a half-size input; pasting with the scaled affine lands in the original frame.
    region = torch.tensor([[10.0, 4.0, 34.0, 36.0]])  # 24 x 32 in the input frame
    a, _ = boxes_to_affines(region, (64, 48))
    a_orig = a * 2.0
    win = crop_windows(a_orig, (64, 48), (100, 120))
    assert win.tolist() == [[20, 8, 68, 72]]
    probs = torch.zeros(1, 2, 64, 48)
    probs[:, 1] = 1.0
    pasted, inside = paste_to_image(probs, a_orig, (100, 120))
    assert inside[0, 8:72, 20:68].all() and int(inside.sum()) == 64 * 48
    torch.testing.assert_close(pasted[0, 1, 8:72, 20:68], torch.ones(64, 48))
    # a window clipped by the image border
    win2 = crop_windows(a * 4.0, (64, 48), (100, 120))
    assert win2.tolist() == [[40, 16, 120, 100]]

def test_antialiased_crops_average_what_they_shrink():
    """A crop that shrinks one-pixel stripes 4x: plain bilinear sampling hits the centres of the
    dark stripes only (aliasing: a black crop), the anti-aliased crop averages 4 x 4 samples per
    crop pixel (roi_align's sampling ratio), i.e. the stripes' mean 127.5 everywhere. A crop that
    enlarges the image is the same either way."""
    from qanet_d2.layers.crops import crop_images, supersampling_factors

    stripes = torch.zeros(1, 1, 64, 64)
    stripes[..., 1::2] = 255.0
    shrink = torch.tensor([[[4.0, 0.0, 0.5], [0.0, 4.0, 0.0]]])  # crop pixel = 4 x 4 image pixels
    assert supersampling_factors(shrink).tolist() == [4]
    plain = crop_images(stripes, torch.zeros(1, dtype=torch.long), shrink, (16, 16))
    smooth = crop_images(stripes, torch.zeros(1, dtype=torch.long), shrink, (16, 16), antialias=True)
    torch.testing.assert_close(plain, torch.zeros_like(plain), atol=0.01, rtol=0)  # every sample on a dark stripe
    torch.testing.assert_close(smooth, torch.full_like(smooth, 127.5), atol=0.01, rtol=0)
    grow = torch.tensor([[[0.5, 0.0, 3.0], [0.0, 0.5, 2.0]], [[2.6, 0.0, 0.0], [0.0, 2.6, 0.0]]])
    assert supersampling_factors(grow).tolist() == [1, 3]
    both = crop_images(stripes, torch.zeros(2, dtype=torch.long), grow, (16, 16), antialias=True)
    torch.testing.assert_close(both[:1], crop_images(stripes, torch.zeros(1, dtype=torch.long), grow[:1], (16, 16)))
    plain_26 = crop_images(stripes, torch.zeros(1, dtype=torch.long), grow[1:], (16, 16))
    assert (both[1] - 127.5).abs().mean() < (plain_26 - 127.5).abs().mean() / 2


def test_normalize_image_turns_bgr_into_normalised_rgb():
    image = torch.tensor([10, 20, 30], dtype=torch.uint8).view(3, 1, 1).expand(3, 2, 2)  # B, G, R
    mean, std = torch.tensor([1.0, 2.0, 3.0]).view(3, 1, 1), torch.tensor([2.0, 4.0, 8.0]).view(3, 1, 1)
    bgr = normalize_image(image, mean, std, "BGR")
    torch.testing.assert_close(bgr[:, 0, 0], torch.tensor([(30 - 1) / 2, (20 - 2) / 4, (10 - 3) / 8]))
    rgb = normalize_image(image, mean, std, "RGB")
    torch.testing.assert_close(rgb[:, 0, 0], torch.tensor([(10 - 1) / 2, (20 - 2) / 4, (30 - 3) / 8]))
    assert image[0, 0, 0] == 10  # the input is left as it was
