//! Route labels: the pattern the operator says a request matched, kept
//! as a static string so that a request's metric labels borrow it, and
//! bounded so that no operator can grow the registry without end.

use super::{metrics, OTHER};

/// Distinct route labels kept at most. The default operator has about
/// thirty routes; a custom operator naming more (or naming them badly)
/// has the rest counted as `other`, so that no operator can grow the
/// registry without end.
pub(super) const MAX_ROUTES: usize = 64;

/// Whether `route` looks like a route pattern (`/handlers/{name}/runs`):
/// short, and of path characters and braces only.
pub(super) fn is_pattern(route: &str) -> bool {
    route.starts_with('/')
        && route.len() <= 80
        && route
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/{}._-*".contains(&b))
}

/// The label for `route`, the pattern the operator says it matched: itself
/// while there is room for it, else `other`. Each thread remembers the
/// labels it handed out last, so that the same few routes, asked for on
/// every request, cost a comparison of strings rather than the registry's
/// lock and a hash.
pub fn route_label(route: &str) -> &'static str {
    let recent = RECENT_ROUTES.with_borrow(|recent| recent.iter().copied().find(|r| *r == route));
    if let Some(known) = recent {
        return known;
    }
    let label = registered_route_label(route);
    if label != OTHER {
        RECENT_ROUTES.with_borrow_mut(|recent| {
            if recent.len() == RECENT_ROUTES_KEPT {
                recent.remove(0);
            }
            recent.push(label);
        });
    }
    label
}

/// Route labels a thread remembers.
const RECENT_ROUTES_KEPT: usize = 8;

thread_local! {
    static RECENT_ROUTES: std::cell::RefCell<Vec<&'static str>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// The registry's label for `route`, registered on first sight.
fn registered_route_label(route: &str) -> &'static str {
    if !is_pattern(route) {
        return OTHER;
    }
    let mut routes = metrics().routes.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(known) = routes.get(route) {
        return known;
    }
    if routes.len() >= MAX_ROUTES {
        return OTHER;
    }
    let kept: &'static str = Box::leak(route.to_owned().into_boxed_str());
    routes.insert(kept);
    kept
}
