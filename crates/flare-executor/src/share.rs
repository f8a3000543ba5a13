//! A node's share of a function's limits in a cluster.
//!
//! A function's `minscale`, `maxscale`, `maxconcurrency` and `queue` are
//! the cluster's, not each node's: every node serves its share of them,
//! worked out from its rank among the live nodes (by name) and their
//! number, and worked out again when a node comes or goes. `minscale` is
//! spread exactly (the first `minscale % n` nodes keep one more), so the
//! cluster keeps exactly that many warm. The ceilings are divided rounding
//! up, and a node's share is never below one so that every node can serve
//! every function: the cluster-wide total of `maxscale`, `maxconcurrency`
//! and `queue` is at most the set value plus `n - 1` (one node's rounding
//! each), and exact when the value is a multiple of `n`.

use flare_model::Limits;

/// This node's place among the live nodes of its cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    /// Its rank by name, from 0.
    pub rank: u32,
    /// How many nodes are live, itself included.
    pub nodes: u32,
}

impl Default for Share {
    /// A node alone: the whole of every limit.
    fn default() -> Self {
        Share { rank: 0, nodes: 1 }
    }
}

impl Share {
    /// `name`'s share among the live nodes `live` (which may not list it
    /// yet, before its first heartbeat lands).
    pub fn among<'a>(name: &str, live: impl IntoIterator<Item = &'a str>) -> Share {
        let mut names: Vec<&str> = live.into_iter().filter(|n| *n != name).collect();
        names.push(name);
        names.sort_unstable();
        names.dedup();
        let rank = names.iter().position(|n| *n == name).unwrap_or(0);
        Share {
            rank: u32::try_from(rank).unwrap_or(0),
            nodes: u32::try_from(names.len()).unwrap_or(1).max(1),
        }
    }

    /// This node's part of the cluster-wide `limits`.
    pub fn limits(&self, limits: Limits) -> Limits {
        let n = self.nodes.max(1);
        if n == 1 {
            return limits;
        }
        let ceiling = |total: u32| total.div_ceil(n).max(1);
        let min_scale = limits.min_scale / n + u32::from(self.rank < limits.min_scale % n);
        Limits {
            min_scale,
            max_scale: ceiling(limits.max_scale).max(min_scale),
            max_concurrency: ceiling(limits.max_concurrency),
            queue: if limits.queue == 0 {
                0
            } else {
                ceiling(limits.queue)
            },
            ..limits
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(min: u32, max: u32, concurrency: u32, queue: u32) -> Limits {
        Limits {
            min_scale: min,
            max_scale: max,
            max_concurrency: concurrency,
            queue,
            ..Limits::default()
        }
    }

    #[test]
    fn ranks_are_by_name_and_include_the_node_itself() {
        assert_eq!(
            Share::among("b", ["c", "a", "b"]),
            Share { rank: 1, nodes: 3 }
        );
        assert_eq!(Share::among("b", ["c", "a"]), Share { rank: 1, nodes: 3 });
        assert_eq!(Share::among("a", []), Share::default());
    }

    #[test]
    fn minscale_is_spread_exactly_and_ceilings_round_up() {
        let cluster = limits(4, 7, 30, 10);
        let shares: Vec<Limits> = (0..3)
            .map(|rank| Share { rank, nodes: 3 }.limits(cluster))
            .collect();
        let min: Vec<u32> = shares.iter().map(|l| l.min_scale).collect();
        assert_eq!(min, [2, 1, 1], "4 warm in all");
        for share in &shares {
            assert_eq!(share.max_scale, 3, "7 / 3 rounded up");
            assert_eq!(share.max_concurrency, 10);
            assert_eq!(share.queue, 4);
            assert!(share.max_scale >= share.min_scale);
        }
        // Never below one, so every node serves; no queue stays none.
        let small = Share { rank: 2, nodes: 3 }.limits(limits(0, 1, 1, 0));
        assert_eq!(
            (small.max_scale, small.max_concurrency, small.queue),
            (1, 1, 0)
        );
        // A node alone keeps the whole.
        assert_eq!(Share::default().limits(cluster), cluster);
    }
}
