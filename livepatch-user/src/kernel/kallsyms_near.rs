//! Names in /proc/kallsyms close to one that is not there, to suggest what
//! the user meant. Only run on that error path: it scans every symbol.
use std::{fs::File, io::BufRead, io::BufReader, path::Path};

/// How many suggestions to give.
const SUGGESTIONS: usize = 5;
/// Past this length no kernel symbol is a plausible near miss, and the
/// comparison against every symbol would only burn time.
const NAME_MAX: usize = 128;

/// The text symbols nearest to `name` by edit distance, nearest first. A
/// name containing the asked one (or contained in it) counts as close even
/// when longer, since a fragment is a common way to misremember a name.
pub fn closest_symbols(root: &Path, name: &str) -> std::io::Result<Vec<String>> {
    if name.len() > NAME_MAX {
        return Ok(Vec::new());
    }
    let file = File::open(root.join("proc/kallsyms"))?;
    let limit = (name.len() / 3).max(2);
    let mut scored: Vec<(usize, String)> = Vec::new();
    for line in BufReader::with_capacity(1 << 16, file).split(b'\n') {
        let line = line?;
        let Ok(line) = std::str::from_utf8(&line) else {
            continue;
        };
        let mut fields = line.split_ascii_whitespace().skip(1);
        let (Some(kind), Some(symbol)) = (fields.next(), fields.next()) else {
            continue;
        };
        if !matches!(kind, "t" | "T") || symbol == name {
            continue;
        }
        let score = if symbol.len().abs_diff(name.len()) <= limit {
            strsim::levenshtein(symbol, name)
        } else if symbol.contains(name) || name.contains(symbol) && symbol.len() > 3 {
            limit
        } else {
            continue;
        };
        if score <= limit && !scored.iter().any(|(_, s)| s == symbol) {
            scored.push((score, symbol.to_owned()));
        }
    }
    scored.sort();
    Ok(scored
        .into_iter()
        .take(SUGGESTIONS)
        .map(|(_, symbol)| symbol)
        .collect())
}
