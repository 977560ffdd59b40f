"""The block's big convolution alone (2x3, 320 -> 320 channels, batch 64, 32x32, float32, TF32 off):
cuDNN's forward, data-gradient and weight-gradient kernels, and two hand-made alternatives for each
gradient (the data gradient as a forward conv with the rotated kernel; the weight gradient as GEMMs),
with their float32 error against a float64 run. It bounds what the block can reach in parity mode.

    python benchmarks/conv_kernels.py        # needs a CUDA GPU
"""
import torch, time, torch.nn.functional as F
torch.backends.cudnn.allow_tf32 = False; torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.benchmark = True
dev = "cuda"
B, C, H, W, O, kh, kw = 64, 320, 32, 32, 320, 2, 3
x = torch.randn(B, C, H + 1, W + 2, device=dev)  # already padded (down-shifted)
w = torch.randn(O, C, kh, kw, device=dev) * 0.05
go = torch.randn(B, O, H, W, device=dev)
def t(f, n=20):
    for _ in range(3): f()
    torch.cuda.synchronize(); s = time.perf_counter()
    for _ in range(n): f()
    torch.cuda.synchronize(); return (time.perf_counter() - s) / n * 1e3
fl = 2 * B * H * W * O * C * kh * kw
xa = x.clone().requires_grad_(True); wa = w.clone().requires_grad_(True)
def auto():
    y = F.conv2d(xa, wa); return torch.autograd.grad(y, [xa, wa], go)
def fwd():
    with torch.no_grad(): return F.conv2d(x, w)
def dgrad_fwdconv():
    # full correlation of go with the rotated kernel: pad go by (kh-1, kw-1) on all sides
    return F.conv2d(F.pad(go, (kw - 1, kw - 1, kh - 1, kh - 1)), w.flip(2, 3).transpose(0, 1))
def dgrad_cudnn():
    return torch.ops.aten.convolution_backward(go, x, w, None, [1,1], [0,0], [1,1], False, [0,0], 1, [True, False, False])[0]
def wgrad_cudnn():
    return torch.ops.aten.convolution_backward(go, x, w, None, [1,1], [0,0], [1,1], False, [0,0], 1, [False, True, False])[1]
def wgrad_gemm6():
    xl = x.permute(0, 2, 3, 1)  # B, Hp, Wp, C view
    gl = go.permute(1, 0, 2, 3).reshape(O, -1)  # O, BHW (copy)
    out = torch.empty(O, C, kh, kw, device=dev)
    for i in range(kh):
        for j in range(kw):
            out[:, :, i, j] = gl @ xl[:, i:i + H, j:j + W, :].reshape(-1, C)
    return out
def wgrad_im2col():
    cols = F.unfold(x, (kh, kw))  # B, C*kh*kw, L
    gl = go.reshape(B, O, -1)
    return torch.einsum("bol,bkl->ok", gl, cols).view(O, C, kh, kw)
print("fwd", t(fwd), "auto fwd+bwd", t(auto), "dgrad cudnn", t(dgrad_cudnn), "dgrad as fwd conv", t(dgrad_fwdconv),
      "wgrad cudnn", t(wgrad_cudnn), "wgrad 6 gemm", t(wgrad_gemm6), "wgrad im2col", t(wgrad_im2col), "GFLOP", fl / 1e9)
x64, w64, go64 = x.double(), w.double(), go.double()
rd = torch.ops.aten.convolution_backward(go64, x64, w64, None, [1,1], [0,0], [1,1], False, [0,0], 1, [True, True, False])
for name, f, r in [("dgrad cudnn", dgrad_cudnn, rd[0]), ("dgrad fwdconv", dgrad_fwdconv, rd[0]), ("wgrad cudnn", wgrad_cudnn, rd[1]),
                   ("wgrad 6gemm", wgrad_gemm6, rd[1]), ("wgrad im2col", wgrad_im2col, rd[1])]:
    print(name, "max err vs f64", (f().double() - r).abs().max().item(), "scale", r.abs().max().item())
