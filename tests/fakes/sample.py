"""A realistic ~3.2 KB fragment (as JSON) that the fakes send unless told otherwise."""

from __future__ import annotations

import json
from typing import Any

_CODE = '''import numpy as np
import pandas as pd
import streamlit as st

st.set_page_config(page_title="Loan calculator", layout="wide")
st.title("Loan calculator")
st.caption("Monthly payment, total interest and the amortisation schedule of a fixed-rate loan.")

with st.sidebar:
    st.header("Loan")
    principal = st.number_input("Amount", min_value=1000.0, value=250000.0, step=1000.0)
    rate = st.slider("Yearly interest rate (%)", min_value=0.0, max_value=15.0, value=4.5)
    years = st.slider("Duration (years)", min_value=1, max_value=40, value=25)
    extra = st.number_input("Extra payment per month", min_value=0.0, value=0.0, step=50.0)


def schedule(principal: float, rate: float, years: int, extra: float) -> pd.DataFrame:
    """One row per month until the balance reaches zero."""
    monthly_rate = rate / 100 / 12
    months = years * 12
    if monthly_rate == 0:
        payment = principal / months
    else:
        payment = principal * monthly_rate / (1 - (1 + monthly_rate) ** -months)
    rows = []
    balance = principal
    month = 0
    while balance > 0.005 and month < months:
        month += 1
        interest = balance * monthly_rate
        paid = min(balance + interest, payment + extra)
        balance = balance + interest - paid
        rows.append((month, paid, paid - interest, interest, max(balance, 0.0)))
    return pd.DataFrame(rows, columns=["month", "payment", "principal", "interest", "balance"])


table = schedule(principal, rate, years, extra)
left, middle, right = st.columns(3)
left.metric("Monthly payment", f"{table['payment'].iloc[0]:,.2f}")
middle.metric("Total interest", f"{table['interest'].sum():,.2f}")
right.metric("Paid off after", f"{len(table) / 12:.1f} years")

st.subheader("Balance over time")
st.area_chart(table.set_index("month")[["balance"]])

st.subheader("Principal and interest per year")
table["year"] = (table["month"] - 1) // 12 + 1
yearly = table.groupby("year")[["principal", "interest"]].sum()
st.bar_chart(yearly)

with st.expander("Amortisation schedule"):
    st.dataframe(table.round(2), use_container_width=True, hide_index=True)

st.download_button("Download CSV", table.to_csv(index=False), file_name="schedule.csv")
st.write("Sensitivity of the monthly payment to the rate:")
rates = np.linspace(max(rate - 2, 0), rate + 2, 9)
st.line_chart(pd.DataFrame({"rate": rates, "payment": [
    schedule(principal, r, years, 0)["payment"].iloc[0] for r in rates
]}).set_index("rate"))
'''

SAMPLE_FRAGMENT: dict[str, Any] = {
    "commentary": (
        "I will build a Streamlit loan calculator: inputs in the sidebar, three headline metrics, "
        "a balance chart, a yearly principal/interest chart, the full schedule in an expander with "
        "a CSV download, and a small sensitivity chart. Everything needed is in the template."
    ),
    "template": "streamlit-developer",
    "title": "Loan calculator",
    "description": "A fixed-rate loan calculator with charts and an amortisation schedule.",
    "additional_dependencies": [],
    "has_additional_dependencies": False,
    "install_dependencies_command": "",
    "port": 8501,
    "file_path": "app.py",
    "code": _CODE,
}

SAMPLE_JSON = json.dumps(SAMPLE_FRAGMENT)
