import streamlit as st

st.title('compare')
st.info('Not built yet.')
