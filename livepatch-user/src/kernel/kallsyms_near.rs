//! Names in /proc/kallsyms close to one that is not there, to suggest what
//! the user meant. Only run on that error path: it scans every symbol.
use std::path::Path;

use super::kallsyms::for_each_symbol;

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
    let limit = (name.len() / 3).max(2);
    let mut scored: Vec<(usize, String)> = Vec::new();
    for_each_symbol(root, |symbol| {
        if !matches!(symbol.kind, 't' | 'T') || symbol.name == name {
            return;
        }
        let symbol = symbol.name;
        let score = if symbol.len().abs_diff(name.len()) <= limit {
            strsim::levenshtein(symbol, name)
        } else if symbol.contains(name) || name.contains(symbol) && symbol.len() > 3 {
            limit
        } else {
            return;
        };
        if score <= limit && !scored.iter().any(|(_, s)| s == symbol) {
            scored.push((score, symbol.to_owned()));
        }
    })?;
    scored.sort();
    Ok(scored
        .into_iter()
        .take(SUGGESTIONS)
        .map(|(_, symbol)| symbol)
        .collect())
}
