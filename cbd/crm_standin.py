"""A stand-in CRM with demo orders, so `make run` and the tests act on a real HTTP system.

It plays a tenant's order, account and refund systems as `shared/data/connectors.demo.yaml`
describes them. Real tenants point the connector at their own systems instead. Order `A9999`
always fails with a 503, so the degraded path ("I'll check with a colleague") can be seen.

Run it alone with `python -m cbd.crm_standin --port 8095`.
"""

from __future__ import annotations

import argparse
import itertools
from typing import Any

import uvicorn
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

ORDERS: dict[str, dict[str, Any]] = {
    "A1001": {
        "customer_id": "cust-1",
        "item": "blue kettle",
        "status": "out for delivery",
        "eta": "today by 18:00",
        "tracking": {
            "carrier": "ParcelCo",
            "tracking_number": "PC123456789",
            "last_scan": "local depot, 07:42",
        },
    },
    "A1002": {
        "customer_id": "cust-1",
        "item": "washing machine",
        "status": "delayed at the warehouse",
        "eta": "Thursday",
        "tracking": {
            "carrier": "HeavyFreight",
            "tracking_number": "HF-55120",
            "last_scan": "warehouse, Monday",
        },
    },
    "A2001": {
        "customer_id": "cust-2",
        "item": "running shoes",
        "status": "delivered",
        "eta": "delivered on Monday",
        "tracking": {
            "carrier": "ParcelCo",
            "tracking_number": "PC987654321",
            "last_scan": "delivered, front door",
        },
    },
}
"""Demo orders; `make run`'s chat makes up customer ids, so any customer may ask about them."""

CUSTOMERS: dict[str, dict[str, Any]] = {
    "cust-1": {"name": "Sam Taylor", "tier": "gold", "lifetime_value": 1840.5},
    "cust-2": {"name": "Alex Kim", "tier": "standard", "lifetime_value": 129.0},
}

FAILING_ORDER = "A9999"


class NotificationRequest(BaseModel):
    """Tell a customer when a product is back."""

    customer_id: str
    product: str


class RefundRequest(BaseModel):
    """A refund or compensation for a person to review."""

    customer_id: str
    order_id: str
    reason: str = ""


def create_app() -> FastAPI:
    """The stand-in CRM's HTTP API; state lives in the app, so each app starts fresh."""
    app = FastAPI(title="Care-by-Design stand-in CRM", version="1")
    ids = itertools.count(1)
    notifications: list[dict[str, str]] = []
    refunds: list[dict[str, str]] = []

    def order(order_id: str) -> dict[str, Any]:
        if order_id == FAILING_ORDER:
            raise HTTPException(503, "order system unavailable")
        found = ORDERS.get(order_id.upper())
        if found is None:
            raise HTTPException(404, "no such order")
        return found

    @app.get("/orders/{order_id}")
    def get_order(order_id: str) -> dict[str, Any]:
        found = order(order_id)
        return {"order_id": order_id.upper(), **{k: v for k, v in found.items() if k != "tracking"}}

    @app.get("/orders/{order_id}/tracking")
    def get_tracking(order_id: str) -> dict[str, Any]:
        return {"order_id": order_id.upper(), **order(order_id)["tracking"]}

    @app.get("/customers/{customer_id}")
    def get_customer(customer_id: str) -> dict[str, Any]:
        profile = CUSTOMERS.get(customer_id)
        if profile is None:
            raise HTTPException(404, "no such customer")
        owned = sorted(k for k, v in ORDERS.items() if v["customer_id"] == customer_id)
        return {
            "customer_id": customer_id,
            **profile,
            "orders_count": len(owned),
            "last_order_id": owned[-1] if owned else None,
        }

    @app.post("/notifications", status_code=201)
    def notify(body: NotificationRequest) -> dict[str, str]:
        record = {"request_id": f"N{next(ids):05d}", **body.model_dump()}
        notifications.append(record)
        return record

    @app.post("/refund-requests", status_code=201)
    def refund(body: RefundRequest) -> dict[str, str]:
        order(body.order_id)
        record = {
            "request_id": f"R{next(ids):05d}",
            "status": "pending review",
            **body.model_dump(),
        }
        refunds.append(record)
        return record

    @app.get("/requests")
    def requests() -> dict[str, list[dict[str, str]]]:
        """What the platform asked for: tests read it to prove an action really ran."""
        return {"notifications": notifications, "refunds": refunds}

    return app


def main() -> None:
    """Serve the stand-in CRM."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8095)
    args = parser.parse_args()
    uvicorn.run(create_app(), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
