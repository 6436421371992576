//! Placeholders for SQL whose number of bound values is known only at run time (IN lists,
//! multi-row `VALUES`, search filters): numbered `$1, $2, …` on PostgreSQL, bare `?` on SQLite.
//!
//! SQLite would parse `$N` too, but sqlx binds a numbered SQLite parameter by asking SQLite its
//! name (`sqlite3_bind_parameter_name`), a linear scan of the statement's named parameters, so a
//! statement of n values costs n²/2 steps: a third of the server's time in a 1000-metric batch
//! (docs/benchmarks.md, "Where a batch's time went"). A bare `?` has no name and binds at once.
//!
//! sqlx numbers bare `?`s by counting them, so in a statement built here every value must come
//! from one [`Placeholders`], in the order the query binds them, and none may be written `$N` by
//! hand (a `$1` beside `?`s would take the first value twice). A value used twice is bound twice.
//! Statements with a fixed handful of values keep their literal `$N`: their cost is negligible.

use crate::db::Backend;

/// Hands out the placeholders of one statement in binding order.
pub(crate) struct Placeholders {
    backend: Backend,
    /// Values handed out so far (the last `$N`'s number on PostgreSQL).
    count: usize,
}

impl Placeholders {
    pub(crate) fn new(backend: Backend) -> Placeholders {
        Placeholders { backend, count: 0 }
    }

    /// The next value's placeholder.
    pub(crate) fn one(&mut self) -> String {
        self.count += 1;
        match self.backend {
            Backend::Sqlite => "?".to_string(),
            Backend::Postgres => format!("${}", self.count),
        }
    }

    /// The next `n` values, comma-separated (an IN list).
    pub(crate) fn list(&mut self, n: usize) -> String {
        let mut out = String::with_capacity(n * 6);
        for i in 0..n {
            if i > 0 {
                out.push_str(", ");
            }
            out.push_str(&self.one());
        }
        out
    }

    /// `rows` tuples of `width` values each, for a multi-row `VALUES`.
    pub(crate) fn rows(&mut self, rows: usize, width: usize) -> String {
        let mut out = String::with_capacity(rows * (width * 6 + 4));
        for r in 0..rows {
            if r > 0 {
                out.push_str(", ");
            }
            out.push('(');
            out.push_str(&self.list(width));
            out.push(')');
        }
        out
    }
}

/// An IN list of `n` values, for a statement that binds nothing else.
pub(crate) fn in_list(backend: Backend, n: usize) -> String {
    Placeholders::new(backend).list(n)
}

/// `rows` tuples of `width` values, for a multi-row `VALUES` that is the statement's only binding.
pub(crate) fn values_rows(backend: Backend, rows: usize, width: usize) -> String {
    Placeholders::new(backend).rows(rows, width)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_is_bound_in_order() {
        assert_eq!(values_rows(Backend::Sqlite, 2, 2), "(?, ?), (?, ?)");
        assert_eq!(values_rows(Backend::Postgres, 2, 3), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(in_list(Backend::Sqlite, 3), "?, ?, ?");
        assert_eq!(in_list(Backend::Postgres, 2), "$1, $2");
    }

    #[test]
    fn one_statement_numbers_on_across_calls() {
        let mut p = Placeholders::new(Backend::Postgres);
        assert_eq!(
            format!("{} IN ({}) VALUES {}", p.one(), p.list(2), p.rows(1, 2)),
            "$1 IN ($2, $3) VALUES ($4, $5)"
        );
        let mut p = Placeholders::new(Backend::Sqlite);
        assert_eq!(format!("{} IN ({})", p.one(), p.list(2)), "? IN (?, ?)");
    }
}
