use std::sync::Arc;

use crate::adaptive::Controller;
use crate::pool::PoolInner;

/// Units a request holds while it runs; returned on drop (completion,
/// cancellation or panic).
#[derive(Debug)]
pub(crate) struct Permit {
    pool: Arc<PoolInner>,
    held: Held,
    adaptive: Option<(Arc<Controller>, tokio::time::Instant)>,
}

#[derive(Debug)]
enum Held {
    Units(u64),
    Grant(crate::pool::GrantRef),
}

impl Permit {
    #[inline]
    pub(crate) fn units(pool: Arc<PoolInner>, units: u64) -> Self {
        Permit {
            pool,
            held: Held::Units(units),
            adaptive: None,
        }
    }

    pub(crate) fn grant(pool: Arc<PoolInner>, grant: crate::pool::GrantRef) -> Self {
        Permit {
            pool,
            held: Held::Grant(grant),
            adaptive: None,
        }
    }

    #[inline]
    pub(crate) fn measured(mut self, controller: Option<&Arc<Controller>>) -> Self {
        self.adaptive = controller.map(|c| (c.clone(), tokio::time::Instant::now()));
        self
    }

    /// The request finished (not cancelled): feed its latency to the
    /// adaptive limit, if any.
    #[inline]
    pub(crate) fn finished(&mut self) {
        if let Some((controller, started)) = self.adaptive.take() {
            controller.sample(started.elapsed(), &self.pool);
        }
    }
}

impl Drop for Permit {
    #[inline]
    fn drop(&mut self) {
        match &self.held {
            Held::Units(units) => self.pool.return_units(*units),
            Held::Grant(grant) => {
                self.pool.release_grant(grant, false);
            }
        }
    }
}
