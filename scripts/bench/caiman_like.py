"""A CaImAn-shaped calcium-imaging pipeline, for benchmarking `caiclust run`.

Only numpy, scipy and OpenCV; deterministic (seeded). It does what a CaImAn
script does, in the same way, at a smaller size:

1. The parent "loads" a movie: it synthesises one (neurons, background,
   noise, a random walk of rigid shifts), normalises it and saves it as a
   memory-mapped file, as `caiman.save_memmap` does; it also builds the
   first template (`bin_median` of the first frames). This runs numpy,
   OpenBLAS and OpenCV in the parent before the pool forks.
2. Motion correction, one task per chunk of frames, in two passes as
   CaImAn's `MotionCorrect` with `pw_rigid=True` does: a rigid pass that
   only refines the template (`motion_correct_batch_rigid`), then a
   piecewise-rigid pass that saves the movie (`motion_correct_batch_pwrigid`
   / `tile_and_correct_wrapper` / `tile_and_correct`). Per frame: a
   high-pass filter (`cv2.getGaussianKernel`, `cv2.filter2D`); an FFT
   cross-correlation with the template (`np.fft.fft2` / `ifft2`) refined by
   an upsampled matrix-multiply DFT (`_upsampled_dft`), for the whole frame
   and then for each overlapping patch; the rigid shift applied with
   `cv2.warpAffine`, the patch shifts upsampled with `cv2.resize` and
   applied with `cv2.remap`. The corrected frames go into a shared
   memory-mapped file; each chunk returns its shifts, its mean image and a
   low-rank background estimate (temporal Gram matrix and `eigh`).
3. CNMF on overlapping spatial patches (`run_CNMF_patches` /
   `cnmf_patches`): per patch a greedy initialisation, HALS iterations
   (CaImAn's `hals`), a spatial update by least squares of every pixel on the
   temporal components and a temporal update by least squares on the
   footprints (`scipy.linalg.lstsq`), and an AR(1) fit per component
   (`np.linalg.lstsq`).

The three stages are dispatched exactly as CaImAn does with its
multiprocessing backend: one `multiprocessing.Pool(2)` with the default start
method, and `dview.map_async(f, args).get(4294967)` per stage. CaImAn's
modules and demos call `cv2.setNumThreads(0)` (OpenCV runs sequentially), and
so does this script unless `--opencv library` is given: the native thread
pools left to oversubscribe the CPUs are then OpenBLAS's (numpy's and
scipy's), which size themselves from the environment.

Standard output: one line, `checksum <...>`, equal between runs with the
same arguments whatever the thread settings. Standard error: one line with
the workload, the wall time of each stage, of the parallel part (from the
pool's creation to its end) and of the whole script.

    python scripts/bench/caiman_like.py [--frames 2000] [--size 128] ...
"""

import argparse
import contextlib
import hashlib
import multiprocessing
import os
import sys
import tempfile
import time

import cv2
import numpy as np
import scipy.linalg
import scipy.ndimage
import scipy.sparse

# ---------------------------------------------------------------------------
# Motion correction (caiman/motion_correction.py, reduced)


def bin_median(mat, window=10):
    """Median over time of means of `window` consecutive frames."""
    t, d1, d2 = mat.shape
    window = min(window, t)
    n = (t // window) * window
    return np.median(np.mean(np.reshape(mat[:n], (window, n // window, d1, d2)), axis=0), axis=0)


def high_pass_kernel(gsig):
    """The zero-mean 2-D kernel of CaImAn's `high_pass_filter_space`."""
    ksize = (3 * gsig) // 2 * 2 + 1
    ker = cv2.getGaussianKernel(ksize, gsig)
    ker2d = ker.dot(ker.T)
    nz = np.nonzero(ker2d >= ker2d[:, 0].max())
    zz = np.nonzero(ker2d < ker2d[:, 0].max())
    ker2d[nz] -= ker2d[nz].mean()
    ker2d[zz] = 0
    return ker2d


def high_pass(img, ker2d):
    return cv2.filter2D(np.asarray(img, dtype=np.float32), -1, ker2d, borderType=cv2.BORDER_REFLECT)


def _upsampled_dft(data, region, factor, offsets):
    """Upsampled DFT of a small region by matrix multiplication."""
    n0, n1 = data.shape
    col_kernel = np.exp(
        (-1j * 2 * np.pi / (n1 * factor))
        * (np.fft.ifftshift(np.arange(n1))[:, None] - np.floor(n1 // 2)).dot(
            np.arange(region)[None, :] - offsets[1]
        )
    )
    row_kernel = np.exp(
        (-1j * 2 * np.pi / (n0 * factor))
        * (np.arange(region)[:, None] - offsets[0]).dot(
            np.fft.ifftshift(np.arange(n0))[None, :] - np.floor(n0 // 2)
        )
    )
    return row_kernel.dot(data).dot(col_kernel)


def register_translation(src_freq, target, lb, ub, upsample_factor=10):
    """Subpixel shift of `target` against the template whose FFT is
    `src_freq`, searched between the integer shifts `lb` and `ub`
    (Guizar-Sicairos et al. 2008, as CaImAn's `register_translation`)."""
    target_freq = np.fft.fft2(target)
    product = src_freq * target_freq.conj()
    cc = np.abs(np.fft.ifft2(product))
    # The integer shift of every row and column of the cross-correlation.
    sy = np.fft.fftfreq(cc.shape[0], 1 / cc.shape[0])
    sx = np.fft.fftfreq(cc.shape[1], 1 / cc.shape[1])
    cc[(sy < lb[0]) | (sy > ub[0]), :] = 0
    cc[:, (sx < lb[1]) | (sx > ub[1])] = 0
    i, j = np.unravel_index(np.argmax(cc), cc.shape)
    shifts = np.array([sy[i], sx[j]])
    # Refine around the peak with a matrix-multiply DFT.
    shifts = np.round(shifts * upsample_factor) / upsample_factor
    region = int(np.ceil(upsample_factor * 1.5))
    dftshift = np.fix(region / 2.0)
    offsets = dftshift - shifts * upsample_factor
    up = _upsampled_dft(product.conj(), region, upsample_factor, offsets).conj()
    peak = np.unravel_index(np.argmax(np.abs(up)), up.shape)
    return shifts + (np.array(peak, dtype=np.float64) - dftshift) / upsample_factor


def apply_shift(img, shift):
    """CaImAn's `apply_shift_iteration` (the OpenCV way)."""
    h, w = img.shape
    m = np.float32([[1, 0, shift[1]], [0, 1, shift[0]]])
    out = cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    return np.clip(out, img.min(), img.max())


def sliding_windows(dims, strides, overlaps):
    """Top-left corners of CaImAn's overlapping motion-correction patches."""
    size = strides + overlaps
    starts = [[*range(0, d - size, strides), d - size] for d in dims]
    corners = [(y, x) for y in starts[0] for x in starts[1]]
    return corners, (len(starts[0]), len(starts[1])), size


def tile_and_correct(img, filt, freqs, p):
    """Piecewise-rigid correction of one frame (CaImAn's `tile_and_correct`):
    a rigid shift first, then one shift per patch within `max_deviation` of
    it, upsampled to a dense field (`cv2.resize`) and applied with
    `cv2.remap`."""
    m = p["max_shift"]
    rigid = register_translation(freqs["rigid"], filt, (-m, -m), (m, m))
    if not p["pw_rigid"]:
        return apply_shift(img, rigid), rigid[None]
    dev, size = p["max_deviation"], p["size"]
    shifts = np.array(
        [
            register_translation(f, filt[y : y + size, x : x + size], rigid - dev, rigid + dev)
            for f, (y, x) in zip(freqs["patches"], p["corners"])
        ]
    )
    h, w = img.shape
    field = [
        cv2.resize(
            s.reshape(p["grid"]).astype(np.float32),
            (w, h),
            interpolation=cv2.INTER_CUBIC,
        )
        for s in shifts.T
    ]
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = cv2.remap(
        img,
        gx - field[1],
        gy - field[0],
        cv2.INTER_CUBIC,
        borderMode=cv2.BORDER_REPLICATE,
    )
    return np.clip(out, img.min(), img.max()), shifts


def motion_correct_chunk(args):
    """One chunk of frames (CaImAn's `tile_and_correct_wrapper`): returns the
    shifts, the frame range and the chunk's mean image, and writes the
    corrected frames into the shared memory-mapped file when `out_name` is
    set, with a low-rank background estimate of the chunk."""
    in_name, out_name, shape, (start, stop), template, p = args
    caiman_opencv(p["opencv"])
    movie = np.memmap(in_name, mode="r", dtype=np.float32, shape=shape)
    imgs = np.array(movie[start:stop])
    ker2d = high_pass_kernel(p["gsig_filt"])
    tmpl = high_pass(template, ker2d)
    size = p["size"]
    freqs = {
        "rigid": np.fft.fft2(tmpl),
        "patches": [np.fft.fft2(tmpl[y : y + size, x : x + size]) for y, x in p["corners"]],
    }
    corrected = np.empty_like(imgs)
    shifts = []
    for i, img in enumerate(imgs):
        corrected[i], s = tile_and_correct(img, high_pass(img, ker2d), freqs, p)
        shifts.append(s)
    background = None
    if out_name is not None:
        out = np.memmap(out_name, mode="r+", dtype=np.float32, shape=shape)
        out[start:stop] = corrected
        out.flush()
        del out
        # Low-rank background of the chunk: temporal Gram matrix, its
        # leading eigenvectors, and the matching spatial components.
        yc = corrected.reshape(len(corrected), -1).astype(np.float64)
        yc -= yc.mean(axis=0)
        _, vecs = np.linalg.eigh(yc @ yc.T)
        background = vecs[:, -p["nb"] :].T @ yc
        background *= np.sign(background.sum(axis=1, keepdims=True))
    return np.array(shifts), (start, stop), corrected.mean(axis=0), background


# ---------------------------------------------------------------------------
# CNMF on patches (caiman/source_extraction/cnmf, reduced)


def greedy_init(y, dims, k, gsig):
    """Greedy initialisation: blur the residual's mean image, take the
    brightest spot, fit a footprint and a trace there, subtract, repeat."""
    d1, d2 = dims
    t = y.shape[1]
    b = np.median(y, axis=1, keepdims=True)
    res = y - b
    a = np.zeros((d1 * d2, k))
    c = np.zeros((k, t))
    half = 2 * gsig
    ksize = 4 * gsig + 1
    for i in range(k):
        rho = cv2.GaussianBlur(
            res.mean(axis=1).reshape(d1, d2).astype(np.float32), (ksize, ksize), gsig
        )
        r, q = np.unravel_index(np.argmax(rho), rho.shape)
        r0, r1 = max(r - half, 0), min(r + half + 1, d1)
        q0, q1 = max(q - half, 0), min(q + half + 1, d2)
        idx = (np.arange(r0, r1)[:, None] * d2 + np.arange(q0, q1)[None, :]).ravel()
        local = res[idx]
        trace = np.clip(local.mean(axis=0), 0, None)
        for _ in range(5):  # rank-1 NMF of the neighbourhood
            fp = np.clip(local @ trace / max(trace @ trace, 1e-12), 0, None)
            trace = np.clip(fp @ local / max(fp @ fp, 1e-12), 0, None)
        a[idx, i] = fp
        c[i] = trace
        res[idx] -= np.outer(fp, trace)
    f = np.ones((1, t))
    return a, c, b, f


def hals(y, a, c, b, f, dims, max_iter=5):
    """CaImAn's `hals`: block coordinate descent on Y = A C + b f."""
    k = a.shape[1]
    nb = b.shape[1]
    ind = scipy.ndimage.uniform_filter(a.reshape(dims + (k,)), size=(3, 3, 0)) > 1e-10
    ind = ind.reshape(-1, k)
    ab = np.c_[a, b]
    cf = np.r_[c, f]
    for _ in range(max_iter):
        u = ab.T @ y
        v = ab.T @ ab + np.finfo(float).eps
        for _ in range(2):
            for m in range(k + nb):
                cf[m] = np.clip(cf[m] + (u[m] - v[m] @ cf) / v[m, m], 0, np.inf)
        u = cf @ y.T
        v = cf @ cf.T + np.finfo(float).eps
        for _ in range(2):
            for m in range(k):
                px = ind[:, m]
                ab[px, m] = np.clip(ab[px, m] + (u[m, px] - v[m] @ ab[px].T) / v[m, m], 0, np.inf)
            for m in range(nb):
                ab[:, k + m] = np.clip(
                    ab[:, k + m] + (u[k + m] - v[k + m] @ ab.T) / v[k + m, k + m],
                    0,
                    np.inf,
                )
    return ab[:, :k], cf[:k], ab[:, k:], cf[k:]


def ar1(trace):
    """AR(1) coefficient of a trace by least squares."""
    g, *_ = np.linalg.lstsq(trace[:-1, None], trace[1:], rcond=None)
    return float(g[0])


def cnmf_patch(args):
    """One spatial patch (CaImAn's `cnmf_patches`)."""
    name, shape, (r0, r1, q0, q1), p = args
    caiman_opencv(p["opencv"])
    k, gsig = p["k"], p["gsig"]
    movie = np.memmap(name, mode="r", dtype=np.float32, shape=shape)
    dims = (r1 - r0, q1 - q0)
    y = np.asarray(movie[:, r0:r1, q0:q1], dtype=np.float64)
    y = y.reshape(shape[0], -1).T.copy()
    a, c, b, f = greedy_init(y, dims, k, gsig)
    a, c, b, f = hals(y, a, c, b, f, dims)
    for _ in range(p["rounds"]):
        # Spatial update: regress every pixel on the temporal components.
        cf = np.r_[c, f]
        ab, *_ = scipy.linalg.lstsq(cf.T, y.T, lapack_driver="gelsd", check_finite=False)
        ab = np.clip(ab.T, 0, None)
        a, b = ab[:, :k], ab[:, k:]
        a[:, a.sum(axis=0) == 0] = 1e-9
        # Temporal update: regress every frame on the footprints.
        cf, *_ = scipy.linalg.lstsq(np.c_[a, b], y, lapack_driver="gelsd", check_finite=False)
        cf = np.clip(cf, 0, None)
        c, f = cf[:k], cf[k:]
    norms = np.sqrt((a**2).sum(axis=0)) + 1e-12
    a /= norms
    c *= norms[:, None]
    g = np.array([ar1(trace) for trace in c])
    residual = float(np.linalg.norm(y - a @ c - b @ f))
    a = scipy.sparse.csc_matrix(np.where(a > 1e-3, a, 0))
    return a, c, b, f, g, residual


# ---------------------------------------------------------------------------
# The parent: load, normalise, dispatch, gather


def caiman_opencv(mode):
    """CaImAn's modules and demos call `cv2.setNumThreads(0)` (OpenCV runs
    sequentially); `--opencv library` leaves OpenCV's pool to the
    environment (OPENCV_FOR_THREADS_NUM)."""
    if mode == "caiman":
        with contextlib.suppress(Exception):  # "OpenCV is naturally single threaded"
            cv2.setNumThreads(0)


def synthesise_movie(rng, frames, size, n_neurons, max_shift):
    """A two-photon-like movie: Gaussian neurons with spiking calcium
    traces, a smooth fluctuating background, noise, and a random walk of
    rigid sub-pixel shifts applied with `cv2.warpAffine`."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    centers = rng.uniform(6, size - 6, size=(n_neurons, 2)).astype(np.float32)
    sigmas = rng.uniform(2.0, 3.5, size=n_neurons).astype(np.float32)
    dist2 = (yy[None] - centers[:, 0, None, None]) ** 2 + (
        xx[None] - centers[:, 1, None, None]
    ) ** 2
    a = np.exp(-dist2 / (2 * sigmas[:, None, None] ** 2)).reshape(n_neurons, -1)
    spikes = (rng.random((n_neurons, frames)) < 0.02) * rng.uniform(
        0.5, 1.5, size=(n_neurons, frames)
    )
    gammas = rng.uniform(0.85, 0.95, size=n_neurons)
    c = np.empty((frames, n_neurons), dtype=np.float32)
    level = np.zeros(n_neurons)
    for t in range(frames):  # AR(1) calcium dynamics
        level = gammas * level + spikes[:, t]
        c[t] = level
    b = 1.0 + 0.5 * np.exp(-((yy - size / 2) ** 2 + (xx - size / 3) ** 2) / (2 * (size / 3) ** 2))
    f = 1.0 + 0.1 * np.sin(np.arange(frames, dtype=np.float32) / 150.0)
    movie = (c @ a).reshape(frames, size, size)
    movie += f[:, None, None] * b[None]
    movie += np.float32(0.15) * rng.standard_normal(movie.shape, dtype=np.float32)
    walk = np.cumsum(rng.normal(scale=0.3, size=(frames, 2)), axis=0)
    walk = np.clip(walk, -max_shift + 1, max_shift - 1)
    for i in range(frames):
        movie[i] = apply_shift(movie[i], walk[i])
    return movie


def patch_grid(size, patch, stride):
    starts = list(range(0, size - patch + 1, stride))
    if starts[-1] != size - patch:
        starts.append(size - patch)
    return [(r, r + patch, q, q + patch) for r in starts for q in starts]


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = p.add_argument
    add("--frames", type=int, default=2000)
    add("--size", type=int, default=128, help="frame side, pixels")
    add("--neurons", type=int, default=60)
    add("--chunks", type=int, default=20, help="motion-correction tasks (splits_els)")
    add("--mc-strides", type=int, default=32, help="pw-rigid patch stride (strides)")
    add("--mc-overlaps", type=int, default=32, help="pw-rigid patch overlap")
    add("--patch", type=int, default=32, help="CNMF patch side (2 * rf)")
    add("--stride", type=int, default=24, help="CNMF patch stride")
    add("--k", type=int, default=6, help="components per CNMF patch")
    add("--rounds", type=int, default=2, help="spatial/temporal updates per patch")
    add(
        "--opencv",
        choices=["caiman", "library"],
        default="caiman",
        help="caiman: cv2.setNumThreads(0) as CaImAn does (default); "
        "library: leave OpenCV's thread pool to the environment",
    )
    add("--seed", type=int, default=0)
    return p.parse_args()


def main():
    args = parse_args()
    t_start = time.perf_counter()
    caiman_opencv(args.opencv)

    # Load and normalise, as a CaImAn script does before motion correction.
    rng = np.random.default_rng(args.seed)
    max_shift = 6
    movie = synthesise_movie(rng, args.frames, args.size, args.neurons, max_shift)
    # CaImAn estimates the movie's minimum from its first frames; percentiles
    # of a subsample keep the scale robust.
    movie -= np.percentile(movie[:400], 1)
    movie /= np.percentile(movie[::10], 99.5)
    shape = movie.shape
    template = bin_median(movie[:200])
    corners, grid, size = sliding_windows(shape[1:], args.mc_strides, args.mc_overlaps)
    mc_params = {
        "max_shift": max_shift,
        "max_deviation": 3,
        "gsig_filt": 3,
        "corners": corners,
        "grid": grid,
        "size": size,
        "nb": 2,
        "opencv": args.opencv,
    }
    cnmf_params = {"k": args.k, "gsig": 3, "rounds": args.rounds}
    cnmf_params["opencv"] = args.opencv

    with tempfile.TemporaryDirectory(prefix="caiman_like-") as tmp:
        # caiman.save_memmap: the movie in a file the workers map by name.
        dims = f"d1_{shape[1]}_d2_{shape[2]}_d3_1_order_C_frames_{shape[0]}"
        raw = os.path.join(tmp, f"raw_{dims}_.mmap")
        mc = os.path.join(tmp, f"mc_{dims}_.mmap")
        mm = np.memmap(raw, mode="w+", dtype=np.float32, shape=shape)
        mm[:] = movie
        mm.flush()
        del mm, movie
        np.memmap(mc, mode="w+", dtype=np.float32, shape=shape).flush()

        t0 = time.perf_counter()
        dview = multiprocessing.Pool(2)  # caiman.cluster.setup_cluster(n_processes=2)
        bounds = np.linspace(0, shape[0], args.chunks + 1).astype(int)
        idxs = [(int(bounds[i]), int(bounds[i + 1])) for i in range(args.chunks)]

        # Rigid pass (motion_correct_rigid, movie not saved): a better template.
        rig = {**mc_params, "pw_rigid": False}
        rig_args = [(raw, None, shape, i, template, rig) for i in idxs]
        rig_res = dview.map_async(motion_correct_chunk, rig_args).get(4294967)
        template = np.median(np.array([r[2] for r in rig_res]), axis=0)
        t_rig = time.perf_counter() - t0

        # Piecewise-rigid pass (motion_correct_pwrigid), saving the movie.
        t1 = time.perf_counter()
        els = {**mc_params, "pw_rigid": True}
        els_args = [(raw, mc, shape, i, template, els) for i in idxs]
        els_res = dview.map_async(motion_correct_chunk, els_args).get(4294967)
        t_els = time.perf_counter() - t1

        # CNMF on patches of the corrected movie (run_CNMF_patches).
        t2 = time.perf_counter()
        patches = patch_grid(shape[1], args.patch, args.stride)
        cnmf_args = [(mc, shape, rc, cnmf_params) for rc in patches]
        cnmf_res = dview.map_async(cnmf_patch, cnmf_args).get(4294967)
        t_cnmf = time.perf_counter() - t2
        dview.terminate()
        t_par = time.perf_counter() - t0

    # Gather: shifts, template, and every patch's components in the full FOV.
    rig_shifts = np.concatenate([r[0] for r in rig_res])
    els_shifts = np.concatenate([r[0] for r in els_res])
    new_template = np.median(np.array([r[2] for r in els_res]), axis=0)
    bg = np.concatenate([r[3] for r in els_res])
    d = shape[1] * shape[2]
    cols = []
    for (r0, r1, q0, q1), res in zip(patches, cnmf_res):
        rows = np.arange(r0, r1)[:, None] * shape[2]
        pix = (rows + np.arange(q0, q1)[None, :]).ravel()
        a = res[0].tocoo()
        csc = scipy.sparse.csc_matrix((a.data, (pix[a.row], a.col)), shape=(d, a.shape[1]))
        cols.append(csc)
    a_full = scipy.sparse.hstack(cols).tocsc()
    c_full = np.vstack([r[1] for r in cnmf_res])
    g_all = np.concatenate([r[4] for r in cnmf_res])
    residual = sum(r[5] for r in cnmf_res)

    # The shifts exactly (hashed); sums rounded to 6 significant digits, far
    # above the last-bit differences that thread counts can make in BLAS.
    shifts = np.concatenate([rig_shifts.ravel(), els_shifts.ravel()])
    digest = hashlib.sha256(np.round(shifts, 6).tobytes()).hexdigest()[:16]
    summary = [
        new_template.sum(),
        np.abs(bg).sum(),
        a_full.sum(),
        a_full.nnz,
        c_full.sum(),
        g_all.sum(),
        residual,
    ]
    print("checksum", digest, " ".join(f"{x:.6g}" for x in summary))
    t_total = time.perf_counter() - t_start
    print(
        f"caiman_like: {shape[0]} frames {shape[1]}x{shape[2]}, {args.chunks} chunks, "
        f"{len(corners)} mc patches, {len(patches)} CNMF patches, "
        f"2 workers ({multiprocessing.get_start_method()}), "
        f"opencv {args.opencv}: rigid {t_rig:.2f} s, pw-rigid {t_els:.2f} s, "
        f"CNMF patches {t_cnmf:.2f} s, parallel {t_par:.2f} s, "
        f"total {t_total:.2f} s",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
