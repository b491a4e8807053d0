//! The mutations: a deterministic generator, and the recipes (truncations,
//! byte flips, header fields overwritten) that rebuild each input from its
//! fixture file.

use super::*;

// ---------------------------------------------------------------------------
// Deterministic randomness.

/// xorshift64: small, seeded, reproducible.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn seeded(label: &str) -> Self {
        // FNV-1a of the label, so every fixture has its own fixed stream.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in label.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        Rng(h | 1)
    }

    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform-enough in `0..n` (`n > 0`).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// A byte that is not zero (an XOR mask that changes something).
    pub(crate) fn mask(&mut self) -> u8 {
        (self.next() % 255) as u8 + 1
    }

    /// Keep at most `cap` items, chosen at random, in their original order.
    pub(crate) fn sample<T>(&mut self, items: Vec<T>, cap: usize) -> Vec<T> {
        if items.len() <= cap {
            return items;
        }
        let mut idx: Vec<usize> = (0..items.len()).collect();
        for i in 0..cap {
            let j = i + self.below(idx.len() - i);
            idx.swap(i, j);
        }
        let mut keep = idx[..cap].to_vec();
        keep.sort_unstable();
        let mut slots: Vec<Option<T>> = items.into_iter().map(Some).collect();
        keep.into_iter().filter_map(|i| slots[i].take()).collect()
    }
}

// ---------------------------------------------------------------------------
// Mutations.

pub(crate) enum Edit {
    /// The first `n` bytes of the file.
    Truncate(usize),
    /// The file with these bytes written at these offsets.
    Patch(Vec<(usize, Vec<u8>)>),
    /// Another file, as it is (the fuzzer's regression inputs).
    WholeFile(PathBuf),
}

pub(crate) struct Case {
    /// How to rebuild the input from the fixture file.
    pub(crate) recipe: String,
    pub(crate) edit: Edit,
    /// Also write the input to a file (with the fixture's name) and read it
    /// back with `read_binary`.
    pub(crate) via_file: bool,
}

/// How many mutations of each kind one fixture gets. Cost is about the
/// number of inputs that still parse, times the fixture's parse time (in a
/// debug build: well under 1 ms for MarkupSafe, ~3 ms for libgomp and
/// vcomp140, ~15 ms for libomp, ~40 ms for a 25 MB OpenBLAS); the plans
/// keep the whole file under ~20 s of one core.
#[derive(Clone, Copy)]
pub(crate) struct Plan {
    /// Cuts deep in the file (table edges, half, minus one, random).
    pub(crate) deep_truncations: usize,
    pub(crate) field_writes: usize,
    pub(crate) flips_first_4k: usize,
    pub(crate) region_flips: usize,
    pub(crate) random_words: usize,
}

/// Small files: everything.
pub(crate) const SMALL: Plan = Plan {
    deep_truncations: 64,
    field_writes: 600,
    flips_first_4k: 160,
    region_flips: 320,
    random_words: 96,
};

/// A few hundred KB.
pub(crate) const MEDIUM: Plan = Plan {
    deep_truncations: 24,
    field_writes: 240,
    flips_first_4k: 64,
    region_flips: 160,
    random_words: 32,
};

/// libomp.dylib: large export trie, slow to parse in debug.
pub(crate) const MACHO_DYLIB: Plan = Plan {
    deep_truncations: 16,
    field_writes: 160,
    flips_first_4k: 32,
    region_flips: 120,
    random_words: 24,
};

/// Tens of MB.
pub(crate) const LARGE: Plan = Plan {
    deep_truncations: 8,
    field_writes: 40,
    flips_first_4k: 8,
    region_flips: 24,
    random_words: 6,
};

pub(crate) fn values(width: usize, file_len: usize) -> Vec<u64> {
    let n = file_len as u64;
    match width {
        2 => vec![0, 0xffff, 0x8000, 1],
        4 => vec![
            0,
            0xffff_ffff,
            0x7fff_ffff,
            0x8000_0000,
            n.min(0xffff_ffff),
            1,
        ],
        _ => vec![0, u64::MAX, 1 << 62, 0xffff_ffff, n, n + 1],
    }
}

pub(crate) fn encode(v: u64, width: usize, big_endian: bool) -> Vec<u8> {
    let le = v.to_le_bytes();
    let mut out = le[..width].to_vec();
    if big_endian {
        out.reverse();
    }
    out
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

pub(crate) fn flip(base: &[u8], at: usize, mask: u8) -> (usize, Vec<u8>) {
    (at, vec![base[at] ^ mask])
}

pub(crate) fn describe_flips(flips: &[(usize, Vec<u8>)], base: &[u8], what: &str) -> String {
    let list: Vec<String> = flips
        .iter()
        .map(|(at, new)| format!("{at:#x}: {:02x}->{:02x}", base[*at], new[0]))
        .collect();
    format!("set bytes in {what}: {}", list.join(", "))
}

pub(crate) fn cases(base: &[u8], label: &str, plan: Plan) -> Vec<Case> {
    let n = base.len();
    let l = layout(base);
    let mut rng = Rng::seeded(label);
    let mut out = Vec::new();

    // Truncations: every length through the first bytes and a sweep
    // through the headers (cheap: little left to parse), then a sample of
    // deep cuts (the edges of every table, the classic half and minus one,
    // random points; these parse most of the file).
    let mut lens: Vec<usize> = (0..=n.min(160)).collect();
    let header_end = l.header_end.max(64).min(n);
    let step = (header_end / 96).max(1);
    lens.extend((0..=header_end).step_by(step));
    let mut deep = vec![n / 2, n.saturating_sub(1)];
    let mut more = Vec::new();
    for &(start, len, _) in &l.regions {
        more.extend([
            start,
            start + 1,
            start + len / 2,
            start + len - 1,
            start + len,
        ]);
    }
    more.extend([n / 4, 3 * n / 4, n.saturating_sub(8)]);
    more.extend((0..plan.deep_truncations).map(|_| rng.below(n + 1)));
    more.retain(|&len| len > header_end && len < n);
    more.sort_unstable();
    more.dedup();
    deep.extend(rng.sample(more, plan.deep_truncations.saturating_sub(2)));
    lens.extend(deep);
    lens.retain(|&len| len < n);
    lens.sort_unstable();
    lens.dedup();
    for len in lens {
        out.push(Case {
            recipe: format!("truncate to {len} bytes (of {n})"),
            edit: Edit::Truncate(len),
            via_file: false,
        });
    }

    // Header fields overwritten with 0, all ones, sign bits, the file size.
    let mut writes = Vec::new();
    for f in &l.fields {
        if f.at + f.width > n {
            continue;
        }
        for v in values(f.width, n) {
            let bytes = encode(v, f.width, f.big_endian);
            if base[f.at..f.at + f.width] == bytes[..] {
                continue;
            }
            writes.push(Case {
                recipe: format!(
                    "write u{} {} {v:#x} at {:#x} ({}; was {})",
                    f.width * 8,
                    if f.big_endian { "BE" } else { "LE" },
                    f.at,
                    f.name,
                    hex(&base[f.at..f.at + f.width]),
                ),
                edit: Edit::Patch(vec![(f.at, bytes)]),
                via_file: false,
            });
        }
    }
    out.extend(rng.sample(writes, plan.field_writes));

    // Byte flips in the first 4 KiB: one to eight bytes each.
    let first = n.min(4096);
    if first > 0 {
        for _ in 0..plan.flips_first_4k {
            let k = 1 + rng.below(8);
            let flips: Vec<_> = (0..k)
                .map(|_| flip(base, rng.below(first), rng.mask()))
                .collect();
            out.push(Case {
                recipe: describe_flips(&flips, base, "the first 4 KiB"),
                edit: Edit::Patch(flips),
                via_file: false,
            });
        }
    }

    // Byte flips inside the tables and commands the parser walks; some
    // bytes set to values that mean something there (flags, opcodes).
    if !l.regions.is_empty() {
        for _ in 0..plan.region_flips {
            let (start, len, name) = &l.regions[rng.below(l.regions.len())];
            let k = 1 + rng.below(4);
            let flips: Vec<_> = (0..k)
                .map(|_| {
                    let at = start + rng.below(*len);
                    match rng.below(4) {
                        0 => (at, vec![[0x00, 0xff, 0x08, 0x10, 0x80, 0x7f][rng.below(6)]]),
                        _ => flip(base, at, rng.mask()),
                    }
                })
                .collect();
            out.push(Case {
                recipe: describe_flips(&flips, base, name),
                edit: Edit::Patch(flips),
                via_file: false,
            });
        }
    }

    // Aligned u32/u64 words anywhere in the headers overwritten with
    // extreme values.
    let span = header_end.max(first);
    for _ in 0..plan.random_words {
        let width = if rng.below(2) == 0 { 4 } else { 8 };
        if span < width {
            break;
        }
        let at = rng.below(span - width + 1) & !(width - 1);
        let v = values(width, n)[rng.below(values(width, n).len())];
        out.push(Case {
            recipe: format!(
                "write u{} LE {v:#x} at {at:#x} (random header word; was {})",
                width * 8,
                hex(&base[at..at + width])
            ),
            edit: Edit::Patch(vec![(at, encode(v, width, false))]),
            via_file: false,
        });
    }

    // A few go through a real file and `read_binary` (mmap path): the
    // empty file, a cut header, half the file, a field write, a flip.
    let picks = [
        out.iter().position(|c| matches!(c.edit, Edit::Truncate(0))),
        out.iter()
            .position(|c| matches!(c.edit, Edit::Truncate(len) if len >= 40)),
        out.iter()
            .position(|c| matches!(c.edit, Edit::Truncate(len) if len == n / 2)),
        out.iter().position(|c| c.recipe.starts_with("write")),
        out.iter().rposition(|c| c.recipe.starts_with("set bytes")),
    ];
    for i in picks.into_iter().flatten() {
        out[i].via_file = true;
    }
    out
}
