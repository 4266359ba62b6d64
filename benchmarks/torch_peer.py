"""The peer to beat: the `seed` network and the `fast` recipe written directly in PyTorch.

Same architecture (ResNet v1, blocks (3,3,2), widths (32,64,128), 1x1 conv shortcut without BN,
792,330 params), same augmentation (4-px translation, flip, 8x8 cutout) done on the device,
SGD + Nesterov, one-cycle. channels_last, bf16 autocast on GPU, torch.compile.
Used by benchmarks/train_speed.py; not part of the product.
"""
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

MEAN = torch.tensor([0.4913, 0.4821, 0.4465]) * 255
STD = torch.tensor([0.2452, 0.2428, 0.2606]) * 255


def conv_bn(cin, cout, k=3, stride=1, bn=True):
    layers = [nn.Conv2d(cin, cout, k, stride, padding=k // 2)]
    if bn:
        layers.append(nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01))  # Keras' BN defaults
    return nn.Sequential(*layers)


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.a, self.b = conv_bn(cin, cout, stride=stride), conv_bn(cout, cout)
        self.short = conv_bn(cin, cout, k=1, stride=stride, bn=False) if stride != 1 or cin != cout else None

    def forward(self, x):
        y = self.b(F.relu(self.a(x)))
        return F.relu((self.short(x) if self.short is not None else x) + y)


class SeedResNet(nn.Module):
    def __init__(self, blocks=(3, 3, 2), widths=(32, 64, 128), classes=10):
        super().__init__()
        self.register_buffer("mean", MEAN.view(1, 3, 1, 1))
        self.register_buffer("std", STD.view(1, 3, 1, 1))
        self.stem = conv_bn(3, widths[0])
        layers, cin = [], widths[0]
        for stage, (n, w) in enumerate(zip(blocks, widths)):
            for i in range(n):
                layers.append(Block(cin, w, 2 if stage > 0 and i == 0 else 1))
                cin = w
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(cin, classes)

    def forward(self, x):  # x: raw 0..255, NCHW
        x = F.relu(self.stem((x - self.mean) / self.std))
        x = F.avg_pool2d(self.body(x), 8).flatten(1)
        return self.head(x)


def augment(x, pad=4, cutout=8):
    """Random translation, flip and cutout of a uint8-valued float batch, all on the device."""
    b, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy, dx = torch.randint(0, 2 * pad + 1, (2, b), device=x.device)
    rows = (torch.arange(h, device=x.device)[None] + dy[:, None])[:, None, :, None].expand(b, 3, h, w + 2 * pad)
    x = padded.gather(2, rows)
    cols = (torch.arange(w, device=x.device)[None] + dx[:, None])[:, None, None, :].expand(b, 3, h, w)
    x = x.gather(3, cols)
    x = torch.where(torch.rand(b, 1, 1, 1, device=x.device) < 0.5, x.flip(3), x)
    cy, cx = torch.randint(0, h, (2, b, 1), device=x.device)
    r = torch.arange(h, device=x.device)[None]
    hole = ((r - cy >= -cutout // 2) & (r - cy < cutout // 2))[:, :, None] & \
           ((r - cx >= -cutout // 2) & (r - cx < cutout // 2))[:, None, :]
    return torch.where(hole[:, None], MEAN.to(x.device).view(1, 3, 1, 1), x)


def run(images, labels, epochs=2, batch=512, lr=0.4, device=None, compile=True):
    """Train for `epochs`; return {"epoch_seconds": [...], "params": n}. images: uint8 NHWC numpy."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = SeedResNet().to(device).to(memory_format=torch.channels_last)
    params = sum(p.numel() for p in model.parameters()) + sum(b.numel() for n, b in model.named_buffers()
                                                              if "running" in n)
    x_all = torch.as_tensor(images).permute(0, 3, 1, 2).float().to(device)  # resident on the device
    y_all = torch.as_tensor(labels).long().to(device)
    steps = len(x_all) // batch
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=epochs * steps, pct_start=0.15)
    step_model = torch.compile(model) if compile else model
    amp = torch.autocast(device_type="cuda" if device == "cuda" else "cpu", dtype=torch.bfloat16,
                         enabled=device == "cuda")
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        order = torch.randperm(len(x_all), device=device)
        for i in range(steps):
            idx = order[i * batch:(i + 1) * batch]
            x = augment(x_all[idx]).contiguous(memory_format=torch.channels_last)
            with amp:
                loss = F.cross_entropy(step_model(x), y_all[idx], label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return {"epoch_seconds": times, "params": params, "final_loss": float(loss)}
